"""Pure formats of batch files: custom ids, request lines, result lines, size limits."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

CHAT_URL = "/v1/chat/completions"
#: the longest custom_id the batch APIs accept.
MAX_CUSTOM_ID = 64
_CUSTOM_ID = re.compile(r"([0-9a-f]{32})-(\d{1,6})")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


class BatchLineError(ValueError):
    """A result line that cannot be read (the message names what is wrong, not the file)."""


def custom_id(fingerprint: bytes, policy_index: int) -> str:
    """``<fingerprint hex>-<policy index>``: 34 characters for up to 10 policies, never over 64.

    >>> custom_id(bytes(16), 2)
    '00000000000000000000000000000000-2'
    """
    value = f"{fingerprint.hex()}-{policy_index}"
    assert len(value) <= MAX_CUSTOM_ID
    return value


def parse_custom_id(value: Any) -> tuple[bytes, int]:
    """``(fingerprint, policy index)``; raises BatchLineError for an id this program did not write."""
    match = _CUSTOM_ID.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise BatchLineError(f"custom_id {str(value)[:80]!r} was not written by 'moderate batch prepare'")
    return bytes.fromhex(match.group(1)), int(match.group(2))


def request_line(custom: str, body: bytes) -> bytes:
    """One line of a batch input file; ``body`` is spliced in as sent, byte for byte."""
    head = orjson.dumps({"custom_id": custom, "method": "POST", "url": CHAT_URL})
    return head[:-1] + b',"body":' + body + b"}\n"


@dataclass(slots=True)
class ResultLine:
    custom_id: str
    status_code: int | None  # None: no HTTP answer at all
    body: Any  # the answer's JSON body (a chat completion when status_code is 200)
    error: str | None  # one line when the line is an error


def parse_result_line(raw: bytes) -> ResultLine:
    """A line of a results or errors file, as OpenAI, vLLM run-batch, Groq and Bedrock write them."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BatchLineError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "custom_id" not in data:
        raise BatchLineError("not a batch result (no custom_id)")
    response = data.get("response")
    status = body = None
    if isinstance(response, dict):
        status = response.get("status_code")
        status = status if isinstance(status, int) else None
        body = response.get("body")
        if isinstance(body, str | bytes):  # some hosts send the body as a JSON string
            with contextlib.suppress(orjson.JSONDecodeError):
                body = orjson.loads(body)
    error = _error_text(data.get("error"))
    if error is None and status is not None and status != 200:
        error = f"HTTP {status}: {_error_text(body.get('error') if isinstance(body, dict) else body) or 'error'}"
    if error is None and status is None:
        error = "no response"
    return ResultLine(str(data["custom_id"]), status, body, error)


def _error_text(error: Any) -> str | None:
    if error is None or error == {}:
        return None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        text = f"{code}: {message}" if code and message else str(message or code or error)
    else:
        text = str(error)
    return " ".join(text.split())[:300]


def parse_size(text: str) -> int:
    """``100MB`` → 100,000,000 bytes (``MiB`` for powers of two; a bare number is bytes).

    >>> parse_size("100MB"), parse_size("1 MiB"), parse_size("512")
    (100000000, 1048576, 512)
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (write e.g. 100MB or 200MiB)")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
