"""Groq: requests per day and tokens per minute in ``x-ratelimit-*`` headers on every answer.

``x-ratelimit-limit-requests`` is the daily request limit, ``x-ratelimit-limit-tokens`` the limit per
minute; resets are Go-style durations (``2m59.56s``, ``7.66s``); a 429 carries ``retry-after``.
Cached prompt tokens do not count toward the token limit. ``include_reasoning`` and
``reasoning_format`` are exclusive.
"""

from __future__ import annotations

import math
import time
from typing import Any

from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.hosts.base import OpenAI, Reply, Usage

DEFAULT_RPD = 1_000_000
DEFAULT_TPM = 10_000_000


def go_duration(seconds: float) -> str:
    """Groq's reset format, to the hundredth of a second.

    >>> go_duration(179.56), go_duration(7.66), go_duration(0.25), go_duration(3723)
    ('2m59.56s', '7.66s', '250ms', '1h2m3s')
    """
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    centis = round(seconds * 100)
    hours, rest = divmod(centis, 360_000)
    minutes, rest = divmod(rest, 6_000)
    secs = f"{rest / 100:.2f}".rstrip("0").rstrip(".")
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + f"{secs}s"


class _Window:
    """A bucket holding ``limit`` per ``period`` seconds, refilled continuously."""

    __slots__ = ("level", "limit", "period", "stamp")

    def __init__(self, limit: float, period: float) -> None:
        self.limit, self.period = limit, period
        self.level, self.stamp = float(limit), time.monotonic()

    def refill(self, limit: float) -> None:
        now = time.monotonic()
        if limit != self.limit:
            self.limit, self.level = limit, float(limit)
        self.level = min(self.limit, self.level + (now - self.stamp) * self.limit / self.period)
        self.stamp = now

    def wait_for(self, cost: float) -> float:
        need = min(cost, self.limit)
        return 0.0 if self.level >= need else (need - self.level) * self.period / self.limit

    def reset(self) -> float:
        return (self.limit - self.level) * self.period / self.limit


class Groq(OpenAI):
    name = "groq"
    paths = ("/openai/v1/chat/completions", "/v1/chat/completions")

    def __init__(self) -> None:
        self.requests = _Window(DEFAULT_RPD, 86_400.0)
        self.tokens = _Window(DEFAULT_TPM, 60.0)

    def check(self, body: dict[str, Any]) -> Reply | None:
        if "include_reasoning" in body and "reasoning_format" in body:
            return self.error(400, "invalid_request_error",
                              "include_reasoning and reasoning_format cannot both be set", "invalid_request")
        if body.get("reasoning_format") not in (None, "parsed", "raw", "hidden"):
            return self.bad_request("reasoning_format must be one of parsed, raw, hidden")
        return None

    def shows_reasoning(self, body: dict[str, Any]) -> bool:
        return body.get("include_reasoning") is not False and body.get("reasoning_format") != "hidden"

    def take(self, config: SimulatorConfig, tokens: int) -> float:
        """0 when a request of ``tokens`` (cached ones excluded) fits the limits, else seconds to wait."""
        self.requests.refill(config.rpd or DEFAULT_RPD)
        self.tokens.refill(config.tpm or DEFAULT_TPM)
        wait = max(self.requests.wait_for(1), self.tokens.wait_for(tokens))
        if wait == 0.0:
            self.requests.level -= 1
            self.tokens.level -= tokens
        return wait

    def limited(self, config: SimulatorConfig, wait: float) -> Reply:
        message = f"Rate limit reached for model on tokens or requests per day/minute. Please try again in {wait:.3f}s."
        reply = self.error(429, "tokens", message, "rate_limit_exceeded")
        reply.headers = {"retry-after": str(max(1, math.ceil(wait)))}
        return reply

    def headers(self, config: SimulatorConfig, usage: Usage | None) -> dict[str, str]:
        self.requests.refill(config.rpd or DEFAULT_RPD)
        self.tokens.refill(config.tpm or DEFAULT_TPM)
        return {
            "x-ratelimit-limit-requests": str(int(self.requests.limit)),
            "x-ratelimit-limit-tokens": str(int(self.tokens.limit)),
            "x-ratelimit-remaining-requests": str(max(0, int(self.requests.level))),
            "x-ratelimit-remaining-tokens": str(max(0, int(self.tokens.level))),
            "x-ratelimit-reset-requests": go_duration(self.requests.reset()),
            "x-ratelimit-reset-tokens": go_duration(self.tokens.reset()),
        }

    def usage(self, usage: Usage, config: SimulatorConfig) -> dict[str, Any]:
        shown = super().usage(usage, config)
        shown.update(queue_time=0.01, prompt_time=round(usage.prompt / 2e5, 6),
                     completion_time=round(usage.completion / 1e3, 6))
        shown["total_time"] = round(shown["prompt_time"] + shown["completion_time"], 6)
        return shown

    def decorate(self, response: dict[str, Any], config: SimulatorConfig) -> None:
        response["system_fingerprint"] = "fp_simulator"
        response["x_groq"] = {"id": "req_" + response["id"].rsplit("-", 1)[-1]}
