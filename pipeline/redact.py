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
