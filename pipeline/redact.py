"""Keep secrets out of anything printed: headers and request bodies as they appear in debug logs."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})
_SECRET_FIELDS = frozenset({"key", "api_key", "apikey", "token"})


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of the headers with credentials replaced.

    >>> redact_headers({"Authorization": "Bearer sk-1", "Content-Type": "application/json"})
    {'Authorization': '[redacted]', 'Content-Type': 'application/json'}
    """
    return {k: REDACTED if k.lower() in _SECRET_HEADERS else v for k, v in headers.items()}


def redact_body(body: bytes, *, limit: int = 500) -> str:
    """A request body for a log line: credential fields (ModelsLab's ``key``) replaced, cut short."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"<{len(body)} bytes, not JSON>"
    if isinstance(data, dict):
        data = {k: REDACTED if k.lower() in _SECRET_FIELDS else v for k, v in data.items()}
    text = orjson.dumps(data).decode()
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class Redactor:
    """Removes one secret (the API key) from anything a host sends back before it is kept or shown.

    Hosts sometimes echo what they were sent, and a model can repeat text it saw: every reply body
    passes through `body` before it is read, so error messages, raw output, reasoning and the store
    never hold the key.

    Keys shorter than `MIN_SECRET` characters are placeholders (vLLM users send "EMPTY"), not
    secrets: replacing every "k" of a reply would only corrupt it.

    >>> Redactor("sk-12345678").text("bad key sk-12345678")
    'bad key [redacted]'
    """

    MIN_SECRET = 8
    __slots__ = ("_key", "_key_bytes")

    def __init__(self, key: str | None) -> None:
        self._key = key if key and len(key) >= self.MIN_SECRET else None
        self._key_bytes = self._key.encode() if self._key else None

    def body(self, data: bytes) -> bytes:
        key = self._key_bytes
        return data.replace(key, REDACTED.encode()) if key and key in data else data

    def text(self, text: str) -> str:
        key = self._key
        return text.replace(key, REDACTED) if key and key in text else text
