"""Pieces of the chat-completions wire format the simulator reads and writes."""

from __future__ import annotations

from typing import Any

import orjson

EFFORTS = frozenset({None, "low", "medium", "high"})
HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
    b"</center><hr><center>nginx</center></body></html>"
)


def split_messages(messages: Any) -> tuple[str, str] | None:
    """(system, user) from a messages list, or None when it is malformed."""
    if not isinstance(messages, list):
        return None
    system: list[str] = []
    user = None
    for message in messages:
        if not isinstance(message, dict):
            return None
        content = message.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            return None
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(content)
        elif role == "user":
            user = content
        elif role != "assistant":
            return None
    return None if user is None else ("\n".join(system), user)


def effort(body: dict[str, Any]) -> Any:
    """The requested reasoning effort: ``reasoning_effort`` or OpenRouter's ``reasoning.effort``."""
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and "effort" in reasoning:
        return reasoning["effort"]
    return body.get("reasoning_effort")


def authorised(header: str | None, body: dict[str, Any], key: str) -> bool:
    """The ``Authorization: Bearer`` header or ModelsLab's body ``key`` field carries ``key``."""
    return header == f"Bearer {key}" or body.get("key") == key


def error(status: int, kind: str, message: str, code: str | int | None = None) -> tuple[int, bytes]:
    """(status, OpenAI-style error body)."""
    return status, orjson.dumps({"error": {"message": message, "type": kind, "code": code}})
