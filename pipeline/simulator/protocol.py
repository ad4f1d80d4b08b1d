"""Pieces of the chat-completions wire format the simulator reads."""

from __future__ import annotations

from typing import Any

EFFORTS = frozenset({None, "low", "medium", "high"})


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
