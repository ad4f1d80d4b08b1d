"""The plain OpenAI chat-completions shapes; each host overrides only what it does differently."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.limits import retry_after_headers

JSON = "application/json"
HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
    b"</center><hr><center>nginx</center></body></html>"
)
HTML_503 = (
    b"<html><head><title>503 Service Temporarily Unavailable</title></head><body><center><h1>503 Service "
    b"Temporarily Unavailable</h1></center><hr><center>nginx</center></body></html>"
)


@dataclass(slots=True)
class Reply:
    """What to send back. ``action`` asks the server to misbehave instead: "reset" or "truncate"."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] | None = None
    action: str | None = None


@dataclass(slots=True)
class Usage:
    """Token counts of one billed answer."""

    prompt: int
    completion: int
    cached: int
    reasoning: int


class OpenAI:
    """OpenAI's shapes (the simulator's behaviour before host profiles existed)."""

    name = "openai"
    paths: tuple[str, ...] = ("/v1/chat/completions",)

    # -- requests -------------------------------------------------------------------------------

    def model(self, body: dict[str, Any]) -> Any:
        return body.get("model") or body.get("model_id")

    def authorised(self, header: str | None, body: dict[str, Any], key: str) -> bool:
        """The ``Authorization: Bearer`` header or ModelsLab's body ``key`` field carries ``key``."""
        return header == f"Bearer {key}" or body.get("key") == key

    def check(self, body: dict[str, Any]) -> Reply | None:
        """A refusal for fields this host requires or forbids, else None."""
        return None

    def shows_reasoning(self, body: dict[str, Any]) -> bool:
        return body.get("include_reasoning") is not False

    # -- errors ---------------------------------------------------------------------------------

    def error(self, status: int, kind: str, message: str, code: str | int | None = None) -> Reply:
        return Reply(status, orjson.dumps({"error": {"message": message, "type": kind, "code": code}}))

    def bad_request(self, message: str) -> Reply:
        return self.error(400, "invalid_request_error", message)

    def bad_key(self) -> Reply:
        return self.error(401, "invalid_request_error", "invalid API key", "invalid_api_key")

    def unknown_model(self, model: Any, served: list[str]) -> Reply:
        message = f"the model {model!r} does not exist; served: {', '.join(served)}"
        return self.error(404, "invalid_request_error", message, "model_not_found")

    def no_credit(self, retry_after: float | None = None) -> Reply:
        reply = self.error(402, "insufficient_quota", "out of credit", "insufficient_credits")
        if retry_after is not None:
            reply.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
        return reply

    def limited(self, config: SimulatorConfig, wait: float) -> Reply:
        """429 for the configured rpm/tpm limits."""
        reply = self.error(429, "rate_limit_exceeded", "rate limit reached", "rate_limit_exceeded")
        reply.headers = retry_after_headers(config.retry_after, wait)
        return reply

    def daily_cap(self, config: SimulatorConfig) -> Reply | None:
        """A 429 once the day's requests are spent (hosts with a daily cap), else None (the request counts)."""
        return None

    def quota_spent(self, retry_after: float) -> Reply:
        """``quota_storm``: 429 with a long Retry-After and the request quota at 0, but no reset."""
        reply = self.error(429, "rate_limit_exceeded", "quota exceeded", "rate_limit_exceeded")
        reply.headers = {"Retry-After": str(math.ceil(retry_after)), "x-ratelimit-remaining-requests": "0"}
        return reply

    def busy(self) -> Reply:
        """The ``rate_limited`` fault: 429 with Retry-After: 1, as a busy upstream sends."""
        reply = self.error(429, "rate_limit_exceeded", "the upstream is busy, try again shortly",
                           "rate_limit_exceeded")
        reply.headers = {"Retry-After": "1"}
        return reply

    def server_error(self, status: int) -> Reply:
        return self.error(status, "server_error", "the upstream model server failed")

    # -- answers --------------------------------------------------------------------------------

    def usage(self, usage: Usage, config: SimulatorConfig) -> dict[str, Any]:
        return {
            "prompt_tokens": usage.prompt,
            "completion_tokens": usage.completion,
            "total_tokens": usage.prompt + usage.completion,
            "prompt_tokens_details": {"cached_tokens": usage.cached},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
        }

    def decorate(self, response: dict[str, Any], config: SimulatorConfig) -> None:
        """Add host-specific fields to a finished chat.completion."""

    def headers(self, config: SimulatorConfig, usage: Usage | None) -> dict[str, str] | None:
        """Headers this host sends on every answer (None: only the configured x-ratelimit-*)."""
        return None
