"""LeasedThrottle against a SharedLimiter called directly (no Ray): chunks, give-backs, reports, waits."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.engines.ray import throttle as throttle_module
from pipeline.engines.ray.leases import Grant, LeaseRequest, SharedLimiter
from pipeline.engines.ray.throttle import LeasedThrottle
from pipeline.ratecontrol.decide import Attempt, AttemptKind

REAL_SLEEP = asyncio.sleep


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pair(limiter: SharedLimiter, clock: Clock, *, chunk: int = 4) -> tuple[LeasedThrottle, list[LeaseRequest]]:
    seen: list[LeaseRequest] = []

    async def lease(request: LeaseRequest) -> Grant:
        seen.append(request)
        await REAL_SLEEP(0)
        return limiter.lease(request, now=clock.now)

    return LeasedThrottle(lease, chunk=chunk, clock=clock, expected_completion_tokens=0), seen


def test_one_lease_serves_a_chunk_of_requests() -> None:
    clock = Clock()
    throttle, seen = _pair(SharedLimiter(rpm=None, tpm=None), clock, chunk=4)

    async def main() -> None:
        for _ in range(8):
            await throttle.acquire(100)

    asyncio.run(main())
    assert len(seen) == 2 and [r.requests for r in seen] == [4, 4]


def test_concurrent_workers_wait_for_one_lease_call() -> None:
    clock = Clock()
    throttle, seen = _pair(SharedLimiter(rpm=None, tpm=None), clock, chunk=8)

    async def main() -> None:
        await asyncio.gather(*(throttle.acquire(10) for _ in range(8)))

    asyncio.run(main())
    assert len(seen) == 1


def test_attempts_and_leftovers_go_back_with_the_next_call() -> None:
    clock = Clock()
    throttle, seen = _pair(SharedLimiter(rpm=None, tpm=None, expected_completion_tokens=0), clock, chunk=4)

    async def main() -> None:
        await throttle.acquire(100)
        throttle.after_attempt(Attempt(AttemptKind.REFUSED, retry_after=2.0), headers={"Retry-After": "2"},
                               reserved=100, used=0)
        clock.now += 1.0  # the lease expired
        await throttle.acquire(100)
        await throttle.close()

    asyncio.run(main())
    second = seen[1]
    assert (second.returned_requests, second.returned_tokens) == (3, 300.0)
    assert [(n.kind, n.retry_after, n.headers) for n in second.notes] == [("refused", 2.0, {"retry-after": "2"})]
    last = seen[-1]
    assert (last.requests, last.returned_requests, last.returned_tokens, last.notes) == (0, 3, 300.0, [])


def test_a_worker_waits_as_long_as_the_limiter_says(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    limiter = SharedLimiter(rpm=240, tpm=None, margin=1.0, now=clock.now)  # 4/s, capacity 2
    throttle, _ = _pair(limiter, clock, chunk=2)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds
        await REAL_SLEEP(0)

    monkeypatch.setattr(throttle_module.asyncio, "sleep", sleep)

    async def main() -> None:
        for _ in range(3):
            await throttle.acquire(1)

    asyncio.run(main())
    assert slept == [pytest.approx(0.5)]  # the third request waited for the bucket
    assert limiter.granted == 4  # 2, then the 2 that built up in half a second (one still unused)


def test_a_failed_lease_call_keeps_its_reports_for_the_next() -> None:
    calls = 0

    async def flaky(request: LeaseRequest) -> Grant:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("limiter restarting")
        return Grant(len(request.notes) + 1, 0.0, 0.0, 512.0, 1.0)

    throttle = LeasedThrottle(flaky, chunk=1)
    throttle.after_attempt(Attempt(AttemptKind.ANSWER), completion_tokens=5)

    async def main() -> None:
        with pytest.raises(ConnectionError):
            await throttle.acquire(1)
        await throttle.acquire(1)

    asyncio.run(main())
    assert throttle.leases == 2
