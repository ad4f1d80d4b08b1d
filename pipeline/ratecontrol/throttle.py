"""`Throttle`: what a worker consults before and after each attempt.

`RateControl` is the throttle of one process. A run spread over several processes plugs in
another source of capacity with the same members (`pipeline.engines.ray.throttle.LeasedThrottle`
leases capacity from one limiter shared by every process), and the workers do not change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from pipeline.ratecontrol.decide import Attempt

__all__ = ["Throttle"]


class Throttle(Protocol):
    #: moving mean of completion tokens per billed answer (reservations and budget estimates use it)
    mean_completion: float

    async def acquire(self, prompt_tokens: int, *, stop: asyncio.Event | None = None) -> int | None:
        """Wait until a request with a prompt of about ``prompt_tokens`` tokens may start, take its quota
        and return the tokens reserved (settled by `after_attempt` once the usage is known); None when
        ``stop`` was set while waiting (nothing taken)."""
        ...

    def note_retry(self, seconds: float, why: str | None) -> None:
        """A request waits ``seconds`` before its own retry (long waits are said to the user)."""
        ...

    def after_attempt(self, attempt: Attempt, *, headers: Mapping[str, str] | None = None,
                      reserved: int = 0, used: int = 0, completion_tokens: int | None = None) -> None:
        """Feed every rule with one attempt's result."""
        ...
