"""Keep the API key out of everything the pipeline keeps or shows, in every form a host may write it.

A host that echoes the key rarely writes it plainly: a PHP encoder writes ``/`` as ``\\/``, a proxy
URL-encodes it, an HTML error page uses ``&#47;``, a debugging header holds it in base64. `Redactor`
builds, once per run, one regular expression that matches the key written in any of these forms --
and in any mixture of them, one character at a time -- and a few plain substrings that tell, in
about a microsecond per 2 KB, whether a text needs that expression at all.
"""

from __future__ import annotations

import base64
import html.entities
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from pipeline.call.answers import Completion
    from pipeline.core.records import Verdict

__all__ = ["REDACTED", "Redactor", "redact_body", "redact_headers"]

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})
_SECRET_FIELDS = frozenset({"key", "api_key", "apikey", "token"})
#: HTML5 names of ASCII punctuation (``&sol;`` for ``/``, ``&plus;`` for ``+`` ...)
_ENTITY_CHARS = {name.removesuffix(";"): char for name, char in html.entities.html5.items()
                 if len(char) == 1 and char.isascii() and not char.isalnum() and name.endswith(";")}
_ENTITY_NAMES: dict[str, list[str]] = {}
for _name, _char in _ENTITY_CHARS.items():
    _ENTITY_NAMES.setdefault(_char, []).append(_name)
#: every escape `_char_forms` knows, decoded by `_unescaped`
_ESCAPE = re.compile(r'\\+u([0-9a-fA-F]{4})|\\+([/"])|%([0-9a-fA-F]{2})|&\#(?:[xX]([0-9a-fA-F]+)|(\d+));'
                     r"|&([A-Za-z][A-Za-z0-9]*);")
_ESCAPE_STARTS = ("\\", "%", "&")
#: characters an escape may end with, so an escape just before a form may take its first ones
_ESCAPE_TAILS = frozenset("0123456789abcdefABCDEFuxX/\"")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
#: keys whose forms hold no character that starts an escape: the probes are exact for them
_PLAIN_KEY = re.compile(r"[A-Za-z0-9._~/+=:@!*,()$'?<>\[\]{}|^`-]+")


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

    Forms caught, alone or mixed character by character: the key itself; JSON escapes written as
    text (``\\/``, ``\\u002f``); percent-encoding (``%2F``/``%2f``, ``+`` for a space); HTML character
    references (``&#47;``, ``&#x2F;``, ``&sol;``); and base64 and base64url of the key, standalone (with
    or without padding) or inside a longer base64 string at any of the three byte alignments -- there
    the characters that also carry bits of the neighbouring bytes stay, the key's own are replaced.

    The full expression is slow to scan (every letter may start a match), so `text` first looks for
    a few plain substrings that every form contains once its escapes are decoded; only a text that
    holds one is scanned in full. Keys with characters that start an escape (``%&\\;#`` or a space)
    are always scanned in full.

    Keys shorter than `MIN_SECRET` characters are placeholders (vLLM users send "EMPTY"), not
    secrets: replacing every "k" of a reply would only corrupt it.

    >>> Redactor("sk-12345678").text("bad key sk-12345678")
    'bad key [redacted]'
    >>> Redactor("sk-1234/5678").text("bad key sk-1234%2F5678 or c2stMTIzNC81Njc4")
    'bad key [redacted] or [redacted]'
    """

    MIN_SECRET = 8
    __slots__ = ("_key", "_key_bytes", "_pattern", "_probes")

    def __init__(self, key: str | None) -> None:
        self._key = key if key and len(key) >= self.MIN_SECRET else None
        self._key_bytes = self._key.encode() if self._key else None
        self._pattern = key_pattern(self._key) if self._key else None
        #: plain substrings one of which any form holds once decoded; None: always scan in full
        self._probes = _probes(self._key) if self._key and _PLAIN_KEY.fullmatch(self._key) else None

    def body(self, data: bytes) -> bytes:
        """A reply body with the key as written replaced (safe before JSON decoding: the
        replacement holds no quote or backslash); encoded forms are caught by `text` on each string."""
        key = self._key_bytes
        return data.replace(key, REDACTED.encode()) if key and key in data else data

    def text(self, text: str) -> str:
        """``text`` with every form of the key replaced; the same object when there is none."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        probes = self._probes
        if probes is not None:
            decoded = _unescaped(text) if "%" in text or "&" in text or "\\" in text else text
            if not any(probe in decoded for probe in probes):
                return text
        return pattern.sub(REDACTED, text)

    def strings(self, body: bytes) -> bytes:
        """A reply body with the key out of every string in it, for code that cuts a text short before
        it could be redacted (a cut could keep the start of an encoded key); the same object when the
        body holds no form of the key."""
        if self._pattern is None or not body:
            return body
        text = body.decode("utf-8", "replace")
        if self.text(text) is text:  # a JSON string's form of the key is still a form of it
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self.text(text).encode()
        return orjson.dumps(self._clean(data))

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self._clean(item) for item in value]
        if isinstance(value, dict):
            return {self.text(key): self._clean(item) for key, item in value.items()}
        return value

    def optional(self, text: str | None) -> str | None:
        return self.text(text) if text else text

    def completion(self, completion: Completion) -> None:
        """Redact, in place, every string a chat completion carries."""
        completion.content = self.optional(completion.content)
        completion.reasoning = self.optional(completion.reasoning)
        completion.model = self.optional(completion.model)
        completion.provider = self.optional(completion.provider)
        completion.finish_reason = self.optional(completion.finish_reason)

    def verdict(self, verdict: Verdict, *, answer: str) -> Verdict:
        """The verdict parsed from ``answer`` (already redacted) with the key out of its strings: parsing
        decodes the answer's JSON escapes again. Without a backslash in the answer there are none, and
        each string is a piece of the answer."""
        if self._pattern is None or "\\" not in answer:
            return verdict
        strings = (verdict.category, verdict.confidence, verdict.rationale, *verdict.rule_ids)
        if all(self.optional(text) is text for text in strings):
            return verdict
        return replace(verdict, category=self.optional(verdict.category), confidence=self.optional(verdict.confidence),
                       rationale=self.optional(verdict.rationale),
                       rule_ids=tuple(self.text(rule) for rule in verdict.rule_ids))

    def log_line(self, payload: bytes, limit: int) -> str:
        """A reply body for a debug log line: decoded, redacted, then cut (cutting first could leave
        part of the key at the edge)."""
        return self.text(payload.decode("utf-8", "replace"))[:limit]


def key_pattern(key: str) -> re.Pattern[str]:
    """One expression for every form of ``key`` (see `Redactor`), the longest forms tried first."""
    data = key.encode()
    whole = [form for encoded in (_b64(data, base64.standard_b64encode), _b64(data, base64.urlsafe_b64encode))
             for form in (encoded, encoded.rstrip("="))]
    forms = sorted(set(whole + _base64_cores(data)), key=len, reverse=True)
    alternatives = [_spelled(key)] + [_spelled(form) for form in forms if form != key]
    return re.compile("|".join(alternatives))


def _probes(key: str) -> tuple[str, ...]:
    """What `Redactor.text` looks for before a full scan: the key, and for each byte alignment the
    longest run of letters and digits of its base64 core (the same in base64 and base64url; each
    standalone form contains the first core), or the whole cores when that run is short -- in each,
    leaving out the first characters, which a neighbouring escape such as ``%ab`` may have swallowed
    while decoding."""
    probes = [key[_swallowable(key):]]
    cores = _base64_cores(key.encode())
    for standard, url in zip(cores[:3], cores[3:], strict=True):
        run = max(_ALNUM_RUN.findall(standard[_swallowable(standard):]), key=len, default="")
        probes += [run] if len(run) >= 8 else [standard[_swallowable(standard):], url[_swallowable(url):]]
    return tuple(dict.fromkeys(probes))


def _swallowable(form: str) -> int:
    """How many leading characters of ``form`` an escape just before it could take as its own
    (``\\u0`` + ``0ab``, ``%`` + ``ab``, ``\\`` + ``/``)."""
    count = 0
    while count < min(5, len(form) - 4) and form[count] in _ESCAPE_TAILS:
        count += 1
    return count


def _b64(data: bytes, encode: Callable[[bytes], bytes]) -> str:
    return encode(data).decode()


def _base64_cores(data: bytes) -> list[str]:
    """The base64 characters that depend on ``data`` alone, for ``data`` starting 0, 1 or 2 bytes into
    a longer base64 string (the first characters share bits with the bytes before, the last with those
    after): three of base64, then the same three of base64url."""
    cores = []
    for encode in (base64.standard_b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            text = _b64(b"\0" * offset + data, encode).rstrip("=")
            lead = (0, 2, 3)[offset]
            tail = (0, 1, 1)[(offset + len(data)) % 3]
            cores.append(text[lead:len(text) - tail])
    return cores


def _spelled(text: str) -> str:
    """A pattern for ``text`` with each character written plainly or in any of its escaped forms."""
    return "".join(_char_forms(char) for char in text)


def _char_forms(char: str) -> str:
    code = ord(char)
    if code > 0x7F:
        return re.escape(char)
    hex_digits = _hex(f"{code:02x}")
    # a run of backslashes: JSON text inside JSON text (an answer's verdict inside the reply) doubles them
    forms = [re.escape(char), rf"\\+u00{hex_digits}", f"%{hex_digits}", rf"&\#0*{code};", rf"&\#[xX]0*{hex_digits};"]
    if char in '/"':
        forms.append(rf"\\+{re.escape(char)}")
    if char == "\\":
        forms.append(r"\\+")
    if char == " ":
        forms.append(r"\+")
    forms += [re.escape(f"&{name};") for name in _ENTITY_NAMES.get(char, ())]
    return "(?:" + "|".join(forms) + ")"


def _unescaped(text: str) -> str:
    """``text`` with the escapes `_char_forms` knows decoded, left to right in one pass.

    The same as ``_ESCAPE.sub(_decode_escape, text)``, but the escapes' first characters are found
    with ``str.find``: the regular expression would try every position, ten times slower on 2 KB.
    """
    parts: list[str] = []
    done = 0
    following = {start: text.find(start) for start in _ESCAPE_STARTS}
    while True:
        at = min((i for i in following.values() if i >= 0), default=-1)
        if at < 0:
            break
        match = _ESCAPE.match(text, at)
        if match is not None:
            parts += [text[done:at], _decode_escape(match)]
            done = match.end()
        resume = done if match is not None else at + 1
        for start, i in following.items():
            if 0 <= i < resume:
                following[start] = text.find(start, resume)
    parts.append(text[done:])
    return "".join(parts)


def _decode_escape(match: re.Match[str]) -> str:
    json_hex, json_char, percent, entity_hex, entity_dec, entity_name = match.groups()
    if json_char:
        return json_char
    if entity_name:
        return _ENTITY_CHARS.get(entity_name, match.group())
    code = int(json_hex or percent or entity_hex or "0", 16) if not entity_dec else int(entity_dec)
    return chr(code) if code < 0x110000 else match.group()


def _hex(digits: str) -> str:
    """Hex digits matched in either case (``2f`` or ``2F``)."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in digits)
