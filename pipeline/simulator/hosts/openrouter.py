"""OpenRouter: ``reasoning`` object, usage with ``cost``, a ``provider`` field, numeric error codes.

Errors are ``{"error": {"code": <status>, "message": ...}}``; failures after generation started come
as HTTP 200 with a choice whose ``finish_reason`` is ``"error"`` and which carries its own ``error``.
A request cap (per minute, or per UTC day on free models) answers 429 with the cap's
``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (a Unix time in
milliseconds) in ``error.metadata.headers``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.hosts.base import OpenAI, Reply, Usage
from pipeline.simulator.limits import retry_after_headers

DAY_S = 86_400


def cost(usage: Usage, config: SimulatorConfig) -> float:
    """USD charged: uncached and cached input and output, at the configured prices per million."""
    uncached = usage.prompt - usage.cached
    dollars = (uncached * config.input_price + usage.cached * config.cached_input_price
               + usage.completion * config.output_price) / 1e6
    return round(dollars, 10)


class OpenRouter(OpenAI):
    name = "openrouter"
    paths = ("/api/v1/chat/completions", "/v1/chat/completions")

    def __init__(self) -> None:
        self._day, self._used = -1, 0  # the UTC day counted, and its requests let through

    def limited(self, config: SimulatorConfig, wait: float) -> Reply:
        """The per-minute cap: the caps in the body, and Retry-After in the configured style."""
        reply = self._cap_reply(f"Rate limit exceeded: limit_rpm/{config.models[0]}", config.rpm or 0,
                                time.time() + wait)
        reply.headers = retry_after_headers(config.retry_after, wait)
        return reply

    def daily_cap(self, config: SimulatorConfig) -> Reply | None:
        """Free models' daily cap (``rpd``): past it, 429 until midnight UTC, said only in the body."""
        if config.rpd is None:
            return None
        now = time.time()
        day = int(now // DAY_S)
        if day != self._day:
            self._day, self._used = day, 0
        if self._used < config.rpd:
            self._used += 1
            return None
        return self._cap_reply("Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free "
                               "model requests per day", config.rpd, (day + 1) * DAY_S)

    def _cap_reply(self, message: str, limit: float, reset: float) -> Reply:
        caps = {"X-RateLimit-Limit": str(int(limit)), "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(reset * 1000))}
        return Reply(429, orjson.dumps({"error": {"code": 429, "message": message, "metadata": {"headers": caps}}}))

    def check(self, body: dict[str, Any]) -> Reply | None:
        if not isinstance(body.get("reasoning"), dict):
            return self.bad_request('the "reasoning" object is required, e.g. {"effort": "medium"}')
        return None

    def shows_reasoning(self, body: dict[str, Any]) -> bool:
        return body["reasoning"].get("exclude") is not True and body.get("include_reasoning") is not False

    def error(self, status: int, kind: str, message: str, code: str | int | None = None) -> Reply:
        return Reply(status, orjson.dumps({"error": {"code": status, "message": message}}))

    def no_credit(self, retry_after: float | None = None) -> Reply:
        if retry_after is None:
            return self.error(402, "", "Insufficient credits. Add more using https://openrouter.ai/credits")
        reply = self.error(402, "", "Request exceeds the key's in-flight spending budget; retry shortly")
        reply.headers = {"Retry-After": str(max(1, round(retry_after)))}
        return reply

    def usage(self, usage: Usage, config: SimulatorConfig) -> dict[str, Any]:
        shown = super().usage(usage, config)
        shown["cost"] = cost(usage, config)
        return shown

    def decorate(self, response: dict[str, Any], config: SimulatorConfig) -> None:
        response["provider"] = config.provider_name
        for choice in response["choices"]:
            choice.setdefault("native_finish_reason", choice["finish_reason"])


def choice_error(choice: dict[str, Any]) -> None:
    """Turn ``choice`` into an upstream failure reported inside a 200."""
    choice["message"]["content"] = ""
    choice["message"].pop("reasoning", None)
    choice["message"].pop("reasoning_content", None)
    choice["finish_reason"] = "error"
    choice["native_finish_reason"] = "error"
    choice["error"] = {"code": 502, "message": "Upstream provider error: the model stopped while generating",
                       "metadata": {"provider_name": "Simulator", "raw": "upstream connection reset"}}
