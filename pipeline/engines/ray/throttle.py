"""`LeasedThrottle`: a worker process's `Throttle` backed by capacity leased from the shared limiter.

Workers call `acquire` and `after_attempt` as they would on a `RateControl`. `acquire` spends the
process's allowance; when it is spent (or its lease expired), one coroutine asks the limiter for a
chunk while the others wait for it, handing back what was left and the attempts made since. The
limiter is any coroutine function taking a `LeaseRequest` (a Ray actor's method, or a
`SharedLimiter` called directly in tests).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from pipeline.engines.ray.leases import AttemptNote, Grant, LeaseRequest, limit_headers
from pipeline.ratecontrol.decide import Attempt

__all__ = ["LeasedThrottle"]

Lease = Callable[[LeaseRequest], Awaitable[Grant]]


class LeasedThrottle:
    def __init__(self, lease: Lease, *, chunk: int, clock: Callable[[], float] = time.monotonic,
                 expected_completion_tokens: int = 512) -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self._lease = lease
        self.chunk = chunk
        self._clock = clock
        self.mean_completion = float(expected_completion_tokens)
        self._requests = 0
        self._tokens = 0.0
        self._expires = -math.inf
        self._notes: list[AttemptNote] = []
        self._lock: asyncio.Lock | None = None
        #: lease calls made
        self.leases = 0

    def reservation(self, prompt_tokens: int) -> int:
        return prompt_tokens + int(self.mean_completion)

    async def acquire(self, prompt_tokens: int, *, stop: asyncio.Event | None = None) -> int | None:
        # ``stop`` is not watched here: a lease wait is short (the limiter's ``retry_in``)
        if self._take(tokens := self.reservation(prompt_tokens)):
            return tokens
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one lease call at a time; the others find its grant
            while not self._take(tokens := self.reservation(prompt_tokens)):
                grant = await self._call(self.chunk, tokens)
                if grant.requests == 0:
                    await asyncio.sleep(grant.retry_in)
        return tokens

    def note_retry(self, seconds: float, why: str | None) -> None:
        """Long retry waits are said by the process that runs the limiter, not by each worker."""

    def after_attempt(self, attempt: Attempt, *, headers: Mapping[str, str] | None = None,
                      reserved: int = 0, used: int = 0, completion_tokens: int | None = None) -> None:
        self._notes.append(AttemptNote(attempt.kind.value, attempt.retry_after, limit_headers(headers), reserved,
                                       used, completion_tokens, attempt.quota_spent))

    async def close(self) -> None:
        """Give back what is left and report the last attempts."""
        if self._requests or self._tokens or self._notes:
            await self._call(0, 0)

    def _take(self, tokens: int) -> bool:
        if self._requests > 0 and self._clock() < self._expires:
            self._requests -= 1
            self._tokens -= tokens  # spending beyond the grant is a debt paid at the next lease
            return True
        return False

    async def _call(self, requests: int, tokens_each: int) -> Grant:
        request = LeaseRequest(requests, tokens_each, self._requests, self._tokens, self._notes)
        self._requests, self._tokens, self._notes = 0, 0.0, []
        self.leases += 1
        asked = self._clock()  # the grant was made after this: its validity counts from here
        try:
            grant = await self._lease(request)
        except BaseException:
            self._notes = request.notes + self._notes  # report them next time
            raise
        self._requests, self._tokens = grant.requests, grant.tokens
        self._expires = asked + grant.valid_for
        self.mean_completion = grant.mean_completion
        return grant
