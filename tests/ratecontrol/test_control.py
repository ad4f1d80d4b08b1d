from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from multidict import CIMultiDict

from pipeline.throttle import RateMeter, Throttle

REAL_SLEEP = asyncio.sleep
T0 = 1000.0


class VirtualTime:
    """A fake clock plus an ``asyncio.sleep`` that advances it instead of waiting.

    Concurrent sleepers wake in deadline order: the sleeper with the earliest deadline moves the
    clock to its deadline, the others keep yielding until the clock reaches theirs.
    """

    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.reads = 0
        self.sleeps: list[float] = []
        self._deadlines: list[float] = []

    def clock(self) -> float:
        self.reads += 1
        return self.now

    async def sleep(self, seconds: float, result: Any = None) -> Any:
        self.sleeps.append(seconds)
        deadline = self.now + max(seconds, 0.0)
        self._deadlines.append(deadline)
        while True:
            if deadline <= self.now or deadline == min(self._deadlines):
                self.now = max(self.now, deadline)
                self._deadlines.remove(deadline)
                await REAL_SLEEP(0)
                return result
            await REAL_SLEEP(0)


@pytest.fixture
def vt(monkeypatch: pytest.MonkeyPatch) -> VirtualTime:
    time = VirtualTime()
    monkeypatch.setattr(asyncio, "sleep", time.sleep)
    return time


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


def acquire_times(throttle: Throttle, vt: VirtualTime, count: int, tokens: int = 1) -> list[float]:
    """Acquire ``count`` times in sequence; the virtual instant each one was granted."""

    async def go() -> list[float]:
        granted = []
        for _ in range(count):
            await throttle.acquire(tokens)
            granted.append(vt.now)
        return granted

    return run(go)


# ---- fast path -----------------------------------------------------------------------------------


def test_no_limits_acquire_returns_without_sleeping(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    vt.reads = 0
    assert acquire_times(throttle, vt, 1000, tokens=100_000) == [T0] * 1000
    assert vt.sleeps == []
    assert vt.reads == 1000  # one clock read per acquire


def test_disabled_adaptive_stays_unlimited_after_a_429(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, adaptive=False, clock=vt.clock)
    throttle.on_throttle(None)
    assert throttle.throttled == 1
    assert acquire_times(throttle, vt, 100) == [T0] * 100
    assert vt.sleeps == []


# ---- configured RPM / TPM ------------------------------------------------------------------------


def test_rpm_600_lets_ten_through_then_the_eleventh_waits(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=600, tpm=None, clock=vt.clock)
    granted = acquire_times(throttle, vt, 11)
    assert granted[:10] == [T0] * 10
    assert granted[10] == pytest.approx(T0 + 0.1)
    assert vt.sleeps == [pytest.approx(0.1)]


def test_rpm_holds_the_average_rate(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=600, tpm=None, clock=vt.clock)
    granted = acquire_times(throttle, vt, 110)
    # 10 at once (the burst), then one every 0.1 s
    assert granted[-1] == pytest.approx(T0 + 10.0)


def test_tpm_waits_for_tokens(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=6000, clock=vt.clock)  # 100 tokens/s, burst 100
    granted = acquire_times(throttle, vt, 2, tokens=60)
    assert granted[0] == T0
    assert granted[1] == pytest.approx(T0 + 0.2)  # 20 tokens missing at 100/s


def test_settle_refunds_unused_tokens(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=6000, clock=vt.clock)
    acquire_times(throttle, vt, 1, tokens=100)
    throttle.settle(100, 10)  # the call used far less than reserved
    assert acquire_times(throttle, vt, 1, tokens=90) == [T0]
    assert vt.sleeps == []


def test_settle_charges_extra_tokens(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=6000, clock=vt.clock)
    acquire_times(throttle, vt, 1, tokens=10)
    throttle.settle(10, 60)  # 100 - 10 - 50 = 40 tokens left
    assert acquire_times(throttle, vt, 1, tokens=50) == [pytest.approx(T0 + 0.1)]


# ---- server pauses -------------------------------------------------------------------------------


def test_retry_after_makes_every_later_acquire_wait(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, adaptive=False, clock=vt.clock)
    throttle.on_throttle(retry_after=2.0)

    async def go() -> list[float]:
        granted: list[float] = []

        async def one() -> None:
            await throttle.acquire(1)
            granted.append(vt.now)

        await asyncio.gather(*(one() for _ in range(8)))
        return granted

    granted = run(go)
    assert len(granted) == 8
    assert all(t == pytest.approx(T0 + 2.0) for t in granted)


def test_retry_after_pause_is_shared_in_real_time() -> None:
    throttle = Throttle(rpm=None, tpm=None, adaptive=False)

    async def go() -> list[float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        throttle.on_throttle(retry_after=0.2)

        async def one() -> float:
            await throttle.acquire(1)
            return loop.time() - start

        return await asyncio.gather(*(one() for _ in range(6)))

    waited = asyncio.run(go())
    assert all(0.19 <= w < 1.0 for w in waited), waited


def test_later_retry_after_wins_over_an_earlier_shorter_one(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, adaptive=False, clock=vt.clock)
    throttle.on_throttle(retry_after=5.0)
    throttle.on_throttle(retry_after=1.0)
    assert acquire_times(throttle, vt, 1) == [pytest.approx(T0 + 5.0)]


def test_pause_ends(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, adaptive=False, clock=vt.clock)
    throttle.on_throttle(retry_after=1.0)
    vt.now += 1.5
    assert acquire_times(throttle, vt, 3) == [T0 + 1.5] * 3
    assert vt.sleeps == []


def test_spent_quota_in_headers_pauses_until_the_reset(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    throttle.on_headers({"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "0",
                         "x-ratelimit-reset-requests": "1.5s"})
    assert acquire_times(throttle, vt, 2) == [pytest.approx(T0 + 1.5)] * 2


def test_spent_token_quota_in_headers_pauses_until_its_reset(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    throttle.on_headers({"x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "0",
                         "x-ratelimit-reset-tokens": "250ms"})
    assert acquire_times(throttle, vt, 1) == [pytest.approx(T0 + 0.25)]


def test_healthy_headers_keep_the_fast_path(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    throttle.on_headers({"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "99",
                         "x-ratelimit-reset-requests": "1s"})
    throttle.on_headers({"content-type": "application/json"})
    assert acquire_times(throttle, vt, 50) == [T0] * 50
    assert vt.sleeps == []


def test_low_quota_in_headers_spaces_requests(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    throttle.on_headers({"x-ratelimit-limit-requests": "1000", "x-ratelimit-remaining-requests": "10",
                         "x-ratelimit-reset-requests": "5s"})
    granted = acquire_times(throttle, vt, 3)
    assert granted == [T0, pytest.approx(T0 + 0.5), pytest.approx(T0 + 1.0)]  # 5 s / 10 left


# ---- adaptive rate -------------------------------------------------------------------------------


def test_a_429_engages_the_adaptive_rate(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    assert throttle.adaptive is not None and throttle.adaptive.current_rps is None
    assert acquire_times(throttle, vt, 100) == [T0] * 100
    throttle.on_throttle(None)
    # nothing succeeded yet: half of what was sent (100 in the first quarter second = 400/s), halved
    assert throttle.adaptive.current_rps == pytest.approx(100.0)
    granted = acquire_times(throttle, vt, 102)
    assert granted[:100] == [T0] * 100 and granted[101] > T0  # a one-second burst, then paced


def _accept_20_per_second_for_3_s(throttle: Throttle, vt: VirtualTime) -> None:
    for _ in range(60):
        vt.now += 0.05
        throttle.on_success()


def test_adaptive_rate_starts_from_what_the_server_accepted(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    _accept_20_per_second_for_3_s(throttle, vt)
    throttle.on_throttle(None)
    assert throttle.adaptive is not None
    assert throttle.adaptive.ceiling_rps == pytest.approx(20.0, rel=0.1)
    assert throttle.adaptive.current_rps == pytest.approx(10.0, rel=0.1)
    start = vt.now
    granted = acquire_times(throttle, vt, 40)  # about 10 per second after a one-second burst
    assert granted[0] == start
    assert granted[-1] - start == pytest.approx(3.0, rel=0.15)


def test_adaptive_rate_never_exceeds_the_configured_rpm(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=60, tpm=None, clock=vt.clock)
    _accept_20_per_second_for_3_s(throttle, vt)
    for _ in range(3):  # under a configured limit it takes repeated 429s to lower the rate
        throttle.on_throttle(None)
    start = vt.now
    assert acquire_times(throttle, vt, 3) == [start, pytest.approx(start + 1.0), pytest.approx(start + 2.0)]


def test_one_429_under_a_configured_limit_only_pauses(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=1200, tpm=None, clock=vt.clock)
    _accept_20_per_second_for_3_s(throttle, vt)
    throttle.on_throttle(0.5)
    assert throttle.adaptive is not None and throttle.adaptive.current_rps is None
    assert throttle.limits.paused_until == pytest.approx(vt.now + 0.5)


def test_successes_raise_the_adaptive_rate_again(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    _accept_20_per_second_for_3_s(throttle, vt)
    throttle.on_throttle(None)
    assert throttle.adaptive is not None
    before = throttle.adaptive.current_rps
    assert before is not None
    for _ in range(30):  # ~10 per second, as allowed, for 3 s
        vt.now += 0.1
        throttle.on_success()
    after = throttle.adaptive.current_rps
    assert after is not None and after > before


def test_many_timeouts_lower_the_adaptive_rate(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    for _ in range(5):
        throttle.on_failure(timeout=True)
    assert throttle.adaptive is not None and throttle.adaptive.current_rps == pytest.approx(0.5)
    assert acquire_times(throttle, vt, 2) == [T0, pytest.approx(T0 + 2.0)]


def test_a_lone_timeout_among_successes_keeps_the_fast_path(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    for _ in range(40):
        throttle.on_success()
    throttle.on_failure(timeout=True)
    assert throttle.adaptive is not None and throttle.adaptive.current_rps is None
    assert acquire_times(throttle, vt, 50) == [T0] * 50


def test_a_lone_503_without_retry_after_is_not_a_throttle(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    for _ in range(40):
        throttle.on_success()
    throttle.on_throttle(None, status=503)
    assert throttle.throttled == 1
    assert throttle.adaptive is not None and throttle.adaptive.current_rps is None
    assert acquire_times(throttle, vt, 50) == [T0] * 50


def test_plain_failures_do_not_touch_the_rate(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    throttle.on_failure(timeout=False)
    assert throttle.adaptive is not None and throttle.adaptive.current_rps is None
    assert acquire_times(throttle, vt, 10) == [T0] * 10


# ---- circuit breaker -----------------------------------------------------------------------------


def test_open_breaker_pauses_everyone(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    for _ in range(20):
        throttle.on_failure(timeout=False)
    assert throttle.breaker_pauses == 1
    assert acquire_times(throttle, vt, 3) == [pytest.approx(T0 + 2.0)] * 3


# ---- RateMeter -----------------------------------------------------------------------------------


def test_rate_meter_counts_the_last_two_seconds() -> None:
    meter = RateMeter()
    for i in range(20):
        meter.tick(10.0 + i * 0.1)  # 10 per second for 2 s
    assert meter.rate(11.9) == pytest.approx(20 / 1.9)  # younger than the window: over its age
    assert meter.count(11.9) == 20
    assert meter.rate(13.0) == pytest.approx(3.5)  # 11.25..13.0 holds the 7 ticks 11.3..11.9
    assert meter.rate(20.0) == 0.0


def test_headers_are_read_whatever_their_case(vt: VirtualTime) -> None:
    throttle = Throttle(rpm=None, tpm=None, clock=vt.clock)
    headers = CIMultiDict({"X-RateLimit-Limit-Requests": "100", "X-RateLimit-Remaining-Requests": "0",
                           "X-RateLimit-Reset-Requests": "2s"})  # as aiohttp hands them over
    throttle.on_headers(headers)
    assert acquire_times(throttle, vt, 1) == [pytest.approx(T0 + 2.0)]


def test_rate_meter_is_not_diluted_in_its_first_seconds() -> None:
    meter = RateMeter()
    for i in range(50):
        meter.tick(100.0 + i * 0.01)  # 100 per second for half a second
    assert meter.rate(100.5) == pytest.approx(100.0, rel=0.05)
