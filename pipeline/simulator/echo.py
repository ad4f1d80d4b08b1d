"""A host that leaks the caller's key (``echo_key``): every reply repeats it, in every form a careless
server or proxy writes it, in every field a client keeps.

- ``model``, ``provider`` and ``finish_reason`` hold the key written with JSON escapes (``\\/`` as PHP
  writes ``/``, and ``\\u0073`` for every character), so only a decoded reply shows it;
- the answer's ``rationale`` (a JSON verdict) or its text (any other answer), the reasoning and the
  ``message`` of every error body hold the key plainly, as JSON escapes written as text, in base64 and
  base64url (alone and inside a longer base64 string), URL-encoded (``%2F``, ``+`` form) and as HTML
  character references (``&#47;``, ``&#x2f;``, ``&sol;``);
- a non-JSON body (an HTML error page, plain text) has those forms appended;
- the ``x-debug-authorization`` header holds the key, ``x-debug-token`` its base64.
"""

from __future__ import annotations

import base64
import html
import html.entities
from typing import Any
from urllib.parse import quote, quote_plus

import orjson

from pipeline.simulator.hosts.base import Reply

__all__ = ["echo_models", "echo_reply", "key_forms"]

_NAMED = {char: name for name, char in html.entities.html5.items() if name.endswith(";") and len(char) == 1
          and char.isascii() and not char.isalnum()}
# placeholders put where JSON escapes go once the body is encoded (orjson never writes them itself)
_JSON_SLASH, _JSON_UNICODE = "@@echo-json-slash@@", "@@echo-json-unicode@@"


def key_forms(key: str) -> dict[str, str]:
    """The key as text in every form the host repeats, by name.

    >>> key_forms("sk-a/b+c=d1")["percent"]
    'sk-a%2Fb%2Bc%3Dd1'
    """
    data = key.encode()
    standard = base64.b64encode(data).decode()
    return {
        "plain": key,
        "base64": standard,
        "base64 unpadded": standard.rstrip("="),
        "base64url": base64.urlsafe_b64encode(data).decode(),
        "basic auth": base64.b64encode(b"user:" + data).decode(),
        "bearer base64": base64.b64encode(b"Bearer " + data + b"\n").decode(),
        "percent": quote(key, safe=""),
        "percent lower": "".join(c if c.isalnum() or c in "-_.~" else f"%{ord(c):02x}" for c in key),
        "form": quote_plus(key, safe=""),
        "path": quote(key),
        "html escape": html.escape(key),
        "html decimal": "".join(f"&#{ord(c)};" for c in key),
        "html hex": "".join(f"&#x{ord(c):x};" for c in key),
        "html named": key.replace("/", "&sol;").replace("+", "&plus;").replace("=", "&equals;"),
        "html named all": "".join(f"&{_NAMED[c]}" if c in _NAMED else c for c in key),
        "json slash": key.replace("/", "\\/"),
        "json unicode": key.replace("/", "\\u002f").replace("+", "\\u002B"),
        "json unicode punctuation": "".join(c if c.isalnum() else f"\\u{ord(c):04x}" for c in key),
        "json unicode all": "".join(f"\\u{ord(c):04x}" for c in key),
        "json unicode all upper": "".join(f"\\u{ord(c):04X}" for c in key),
    }


def _forms_text(key: str) -> str:
    return "; ".join(f"{name}: {form}" for name, form in key_forms(key).items())


def echo_reply(reply: Reply, key: str) -> Reply:
    """``reply`` with the key repeated everywhere (a reset or truncated reply is left as it is)."""
    if reply.action is not None:
        return reply
    headers = {**(reply.headers or {}), "x-debug-authorization": key,
               "x-debug-token": base64.b64encode(key.encode()).decode()}
    try:
        data = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        body = reply.body + b" " + _forms_text(key).encode()
        return Reply(reply.status, body, reply.content_type, headers, reply.action)
    if isinstance(data, dict) and isinstance(data.get("choices"), list):
        _echo_completion(data, key)
    else:
        _echo_messages(data, key)
    return Reply(reply.status, _encoded(data, key), reply.content_type, headers, reply.action)


def echo_models(listing: dict[str, Any], key: str) -> bytes:
    """The body of a model list with one more entry, named after the key."""
    extra = {"id": f"{key} {_JSON_SLASH}", "object": "model", "owned_by": _forms_text(key)}
    return _encoded({**listing, "data": [*listing["data"], extra]}, key)


def _echo_completion(data: dict[str, Any], key: str) -> None:
    data["model"] = f"{data.get('model')} {_JSON_SLASH}"
    data["provider"] = f"{data.get('provider') or 'Simulator'} {_JSON_UNICODE}"
    forms = _forms_text(key)
    for choice in data["choices"]:
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason") == "stop":  # "length" and the others keep their meaning
            choice["finish_reason"] = f"stop {_JSON_UNICODE}"
        message = choice.get("message")
        if not isinstance(message, dict):
            continue
        for field in ("reasoning", "reasoning_content"):
            if isinstance(message.get(field), str):
                message[field] += f" (the caller's key: {forms})"
        if isinstance(message.get("content"), str) and message["content"]:
            message["content"] = _echo_answer(message["content"], key)
        if isinstance(choice.get("error"), dict):
            _echo_messages(choice["error"], key)


def _echo_answer(content: str, key: str) -> str:
    """A JSON verdict with the key in its rationale (plainly and as JSON escapes the verdict's own
    decoding turns back into the key); any other answer with the forms after it."""
    forms = _forms_text(key)
    try:
        verdict = orjson.loads(content)
    except orjson.JSONDecodeError:
        return f"{content} {forms}"
    if not isinstance(verdict, dict):
        return f"{content} {forms}"
    verdict["rationale"] = f"{verdict.get('rationale') or ''} Sent with {_JSON_SLASH} and {_JSON_UNICODE}; {forms}"
    return _encoded_text(orjson.dumps(verdict).decode(), key)


def _echo_messages(value: Any, key: str) -> None:
    """Every ``message`` string in an error body, however nested, repeats the key."""
    if isinstance(value, list):
        for item in value:
            _echo_messages(item, key)
    elif isinstance(value, dict):
        for name, item in value.items():
            if name == "message" and isinstance(item, str):
                value[name] = f"{item} (auth {_JSON_SLASH}; {_forms_text(key)})"
            else:
                _echo_messages(item, key)


def _json_escapes(key: str) -> tuple[str, str]:
    """The key inside a JSON string: PHP's ``\\/`` for ``/``, and ``\\u`` for every character."""
    escaped = orjson.dumps(key).decode()[1:-1]
    return escaped.replace("/", "\\/"), "".join(f"\\u{ord(c):04x}" for c in key)


def _encoded_text(json_text: str, key: str) -> str:
    slash, unicode = _json_escapes(key)
    return json_text.replace(_JSON_SLASH, slash).replace(_JSON_UNICODE, unicode)


def _encoded(data: Any, key: str) -> bytes:
    return _encoded_text(orjson.dumps(data).decode(), key).encode()
