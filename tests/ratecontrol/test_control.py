"""RateControl with a fake clock: buckets, host pauses, the adaptive rate, the breaker, reservations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from multidict import CIMultiDict

from pipeline.ratecontrol.control import REPORTED_PAUSE_S, RateControl
from pipeline.ratecontrol.decide import Attempt, AttemptKind

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


def acquire_times(throttle: RateControl, vt: VirtualTime, count: int, tokens: int = 1) -> list[float]:
    """Acquire ``count`` times in sequence; the virtual instant each one was granted."""

    async def go() -> list[float]:
        granted = []
        for _ in range(count):
            await throttle.acquire(tokens)
            granted.append(vt.now)
        return granted

    return run(go)


# ---- fast path -----------------------------------------------------------------------------------

ANSWER = Attempt(AttemptKind.ANSWER)
FAILED = Attempt(AttemptKind.FAILED, "HTTP 500: boom")
TIMEOUT = Attempt(AttemptKind.TIMEOUT, "no answer within 5 s")


def refused(retry_after: float | None = None) -> Attempt:
    return Attempt(AttemptKind.REFUSED, "HTTP 429: slow down", retry_after)


def test_no_limits_acquire_returns_without_sleeping(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    vt.reads = 0
    assert acquire_times(control, vt, 1000, tokens=100_000) == [T0] * 1000
    assert vt.sleeps == []
    assert vt.reads == 1000  # one clock read per acquire


def test_disabled_adaptive_stays_unlimited_after_many_429s(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, adaptive=False, clock=vt.clock)
    for _ in range(100):
        control.after_attempt(refused())
    assert control.refused == 100
    assert acquire_times(control, vt, 100) == [T0] * 100
    assert vt.sleeps == []


# ---- configured RPM / TPM ------------------------------------------------------------------------


def test_rpm_600_lets_ten_through_then_the_eleventh_waits(vt: VirtualTime) -> None:
    control = RateControl(rpm=600, tpm=None, clock=vt.clock)
    granted = acquire_times(control, vt, 11)
    assert granted[:10] == [T0] * 10
    assert granted[10] == pytest.approx(T0 + 0.1)
    assert vt.sleeps == [pytest.approx(0.1)]


def test_rpm_holds_the_average_rate(vt: VirtualTime) -> None:
    control = RateControl(rpm=600, tpm=None, clock=vt.clock)
    granted = acquire_times(control, vt, 110)
    # 10 at once (the burst), then one every 0.1 s
    assert granted[-1] == pytest.approx(T0 + 10.0)


def test_concurrent_waiters_take_turns_instead_of_all_waking_for_each_unit() -> None:
    # real time: 150 workers under 6,000 RPM (100 a second, 100 banked): 100 go at once, 50 queue
    # for half a second, and each grant wakes one waiter, not every waiter
    throttle = RateControl(rpm=6000, tpm=None)
    asks = 0
    reserve = throttle.limits.reserve

    def counted(tokens: int, *, now: float) -> float:
        nonlocal asks
        asks += 1
        return reserve(tokens, now=now)

    throttle.limits.reserve = counted  # type: ignore[method-assign]

    async def go() -> None:
        await asyncio.gather(*(throttle.acquire(1) for _ in range(150)))

    run(go)
    assert asks <= 2 * 150  # without the line: ~1,400 (each waiter asked again for every unit)


def test_after_a_pause_the_whole_line_goes_at_once() -> None:
    # real time: the quota is spent for 0.3 s; five requests wait in line and all go when it returns
    control = RateControl(rpm=None, tpm=None)
    control.after_attempt(ANSWER, headers={"x-ratelimit-remaining-requests": "0",
                                           "x-ratelimit-reset-requests": "0.3s"})

    async def go() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(control.acquire(1) for _ in range(5)))
        return loop.time() - start

    assert run(go) < 0.9  # not 0.3 s more for each in line (a clock read before joining the line): 1.5 s


def test_requests_waiting_in_line_when_the_rate_changes_count_as_sent_at_the_new_rate(vt: VirtualTime) -> None:
    # 1 a second; ten workers ask at once: one goes, nine wait in line. A rate change then (a
    # decision of the adaptive rate) leaves out only the result of the one already sent: the nine
    # are sent after it, at the new rate, and their results are what judges it. Counted as sent
    # when they joined the line, all ten were left out: with 64 workers under a low rate that
    # hid the next decision's evidence for tens of seconds while the rate grew unchecked.
    control = RateControl(rpm=60, tpm=None, clock=vt.clock)

    async def go() -> None:
        workers = [asyncio.ensure_future(control.acquire(1)) for _ in range(10)]
        await REAL_SLEEP(0)
        assert sum(w.done() for w in workers) == 1
        control.window.forget()  # what a rate change does
        await asyncio.gather(*workers)

    run(go)
    for _ in range(10):
        control.after_attempt(refused())
    assert control.window.counts(vt.now)[:2] == (9, 9)


def test_margin_lowers_the_configured_rate(vt: VirtualTime) -> None:
    control = RateControl(rpm=600, tpm=None, margin=0.5, clock=vt.clock)
    granted = acquire_times(control, vt, 6)
    assert granted[:5] == [T0] * 5 and granted[5] == pytest.approx(T0 + 0.2)


def test_tpm_waits_for_tokens(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=6000, clock=vt.clock,
                          expected_completion_tokens=0)  # reserve the prompt alone  # 100 tokens/s, burst 100
    granted = acquire_times(control, vt, 2, tokens=60)
    assert granted[0] == T0
    assert granted[1] == pytest.approx(T0 + 0.2)  # 20 tokens missing at 100/s


def test_usage_below_the_reservation_is_refunded(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=6000, clock=vt.clock,
                          expected_completion_tokens=0)  # reserve the prompt alone
    acquire_times(control, vt, 1, tokens=100)
    control.after_attempt(ANSWER, reserved=100, used=10)  # the call used far less than reserved
    assert acquire_times(control, vt, 1, tokens=90) == [T0]
    assert vt.sleeps == []


def test_usage_above_the_reservation_is_charged(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=6000, clock=vt.clock,
                          expected_completion_tokens=0)  # reserve the prompt alone
    acquire_times(control, vt, 1, tokens=10)
    control.after_attempt(ANSWER, reserved=10, used=60)  # 100 - 10 - 50 = 40 tokens left
    assert acquire_times(control, vt, 1, tokens=50) == [pytest.approx(T0 + 0.1)]


# ---- x-ratelimit headers -------------------------------------------------------------------------


def test_spent_quota_in_headers_pauses_everyone_until_the_reset(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    control.after_attempt(ANSWER, headers={"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "0",
                                           "x-ratelimit-reset-requests": "1.5s"})

    async def go() -> list[float]:
        granted: list[float] = []

        async def one() -> None:
            await control.acquire(1)
            granted.append(vt.now)

        await asyncio.gather(*(one() for _ in range(8)))
        return granted

    assert run(go) == [pytest.approx(T0 + 1.5)] * 8


def test_spent_token_quota_in_headers_pauses_until_its_reset(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    control.after_attempt(ANSWER, headers={"x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "0",
                                           "x-ratelimit-reset-tokens": "250ms"})
    assert acquire_times(control, vt, 1) == [pytest.approx(T0 + 0.25)]


def test_a_spent_quota_whose_reset_is_absurd_pauses_no_longer_than_max_retry_after(vt: VirtualTime) -> None:
    # a gateway sending "x-ratelimit-reset-requests: 1e9" must not stall a nightly run for 31 years
    control = RateControl(rpm=None, tpm=None, max_retry_after=60.0, clock=vt.clock)
    control.after_attempt(ANSWER, headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1e9",
                                           "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "9999h"})
    assert control.limits.paused_until == pytest.approx(vt.now + 60.0)


def test_headers_are_read_whatever_their_case(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    headers = CIMultiDict({"X-RateLimit-Limit-Requests": "100", "X-RateLimit-Remaining-Requests": "0",
                           "X-RateLimit-Reset-Requests": "2s"})  # as aiohttp hands them over
    control.after_attempt(ANSWER, headers=headers)
    assert acquire_times(control, vt, 1) == [pytest.approx(T0 + 2.0)]


def test_headers_in_a_plain_dict_are_read_whatever_their_case(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    control.after_attempt(ANSWER, headers={"X-RateLimit-Limit-Requests": "100",
                                           "X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "2s"})
    assert acquire_times(control, vt, 1) == [pytest.approx(T0 + 2.0)]


def test_healthy_headers_keep_the_fast_path(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    control.after_attempt(ANSWER, headers={"x-ratelimit-limit-requests": "100",
                                           "x-ratelimit-remaining-requests": "99", "x-ratelimit-reset-requests": "1s"})
    control.after_attempt(ANSWER, headers={"content-type": "application/json"})
    assert acquire_times(control, vt, 50) == [T0] * 50
    assert vt.sleeps == []


def test_low_quota_in_headers_spaces_requests(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    control.after_attempt(ANSWER, headers={"x-ratelimit-limit-requests": "1000",
                                           "x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "5s"})
    granted = acquire_times(control, vt, 3)
    assert granted == [T0, pytest.approx(T0 + 0.5), pytest.approx(T0 + 1.0)]  # 5 s / 10 left


# ---- refusals: one waits alone, a share slows everyone -------------------------------------------


def _accept(control: RateControl, vt: VirtualTime, count: int = 50) -> None:
    """``count`` answers at 20 a second."""
    for _ in range(count):
        vt.now += 0.05
        control.after_attempt(ANSWER)


def test_a_single_429_does_not_pause_the_others(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    _accept(control, vt)
    control.after_attempt(refused(30.0))
    assert control.refused == 1 and control.shared_pauses == 0
    assert control.limits.paused_until == float("-inf")
    assert control.adaptive is not None and control.adaptive.current_rps is None
    start = vt.now
    assert acquire_times(control, vt, 50) == [start] * 50


def test_a_few_percent_of_429s_never_slow_anyone(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    for i in range(2000):  # 100 a second for 20 s, one in twenty refused
        vt.now += 0.01
        control.after_attempt(refused(5.0) if i % 20 == 19 else ANSWER)
    assert control.refused == 100 and control.shared_pauses == 0
    assert control.adaptive is not None and control.adaptive.decreases == 0
    start = vt.now
    assert acquire_times(control, vt, 50) == [start] * 50


def test_a_quarter_of_429s_lowers_the_rate_without_pausing_a_host_that_still_accepts(vt: VirtualTime) -> None:
    pauses: list[tuple[float, str]] = []
    control = RateControl(rpm=None, tpm=None, clock=vt.clock, on_pause=lambda s, why: pauses.append((s, why)))
    _accept(control, vt)
    for _ in range(12):
        control.after_attempt(refused(5.0))
    assert control.adaptive is not None and control.adaptive.current_rps is None  # 12 of 50: under a quarter
    accepted_rps = control.window.counts(vt.now)[2]
    control.after_attempt(refused(5.0))  # 13 of 50
    assert control.shared_pauses == 0 and pauses == []  # a lower rate is enough
    assert control.adaptive is not None
    assert 15.0 < accepted_rps <= 20.0
    assert control.adaptive.current_rps == pytest.approx(0.9 * 20.0)  # 0.9 x the best recent second
    assert control.window.counts(vt.now)[:2] == (0, 0)  # the next decision needs fresh samples
    start = vt.now
    granted = acquire_times(control, vt, 40)
    assert granted[0] == pytest.approx(start)  # no pause
    assert granted[-1] == pytest.approx(start + 39 / 18.0)  # paced at once: no burst at the refused rate


def test_a_host_refusing_nearly_everything_pauses_everyone_for_its_retry_after_capped(vt: VirtualTime) -> None:
    pauses: list[tuple[float, str]] = []
    control = RateControl(rpm=None, tpm=None, max_retry_after=60.0, clock=vt.clock,
                          on_pause=lambda s, why: pauses.append((s, why)))
    for _ in range(50):
        control.after_attempt(refused(3600.0))
    assert control.shared_pauses == 1  # 50 of 50: a quota everyone shares is spent
    assert control.limits.paused_until == pytest.approx(vt.now + 60.0)
    assert pauses == [(pytest.approx(60.0), "50 of the last 50 requests were refused")]


def test_a_quarter_of_429s_without_retry_after_lowers_the_rate_without_a_pause(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    _accept(control, vt)
    for _ in range(13):
        control.after_attempt(refused())
    assert control.shared_pauses == 0 and control.limits.paused_until == float("-inf")
    assert control.adaptive is not None and control.adaptive.current_rps is not None


def test_refusals_after_a_busy_spell_keep_the_rate_near_its_peak(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    _accept(control, vt, 100)  # 20 a second for 5 s
    vt.now += 3.0  # the tail of a run: only retries are left
    for _ in range(50):
        vt.now += 0.01
        control.after_attempt(refused())
    assert control.adaptive is not None and control.adaptive.current_rps == pytest.approx(18.0)  # 0.9 x 20


def test_many_timeouts_lower_the_rate(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    _accept(control, vt)
    for _ in range(13):
        control.after_attempt(TIMEOUT)
    assert control.adaptive is not None and control.adaptive.decreases == 1


def test_plain_failures_do_not_touch_the_rate(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    _accept(control, vt)
    for _ in range(15):
        control.after_attempt(FAILED)
    assert control.adaptive is not None and control.adaptive.current_rps is None
    start = vt.now
    assert acquire_times(control, vt, 10) == [start] * 10


def test_the_adaptive_rate_never_exceeds_the_configured_rpm(vt: VirtualTime) -> None:
    control = RateControl(rpm=60, tpm=None, clock=vt.clock)
    _accept(control, vt)
    for _ in range(13):
        control.after_attempt(refused())  # lowered to about 18/s: the configured 1/s still holds
    assert control.adaptive is not None and control.adaptive.decreases == 1
    start = vt.now
    granted = acquire_times(control, vt, 3)
    assert granted == [pytest.approx(start), pytest.approx(start + 1.0), pytest.approx(start + 2.0)]


# ---- circuit breaker -----------------------------------------------------------------------------


def test_open_breaker_pauses_everyone(vt: VirtualTime) -> None:
    pauses: list[tuple[float, str]] = []
    control = RateControl(rpm=None, tpm=None, clock=vt.clock, on_pause=lambda s, why: pauses.append((s, why)))
    for _ in range(20):
        control.after_attempt(FAILED)
    assert control.breaker_pauses == 1
    assert pauses == [(2.0, "most recent requests failed")]
    assert acquire_times(control, vt, 3) == [pytest.approx(T0 + 2.0)] * 3


def test_mostly_answers_keep_the_breaker_closed(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    for i in range(100):
        control.after_attempt(FAILED if i % 2 else ANSWER)
    assert control.breaker_pauses == 0


# ---- on_pause ------------------------------------------------------------------------------------


def test_on_pause_is_called_for_long_pauses_only(vt: VirtualTime) -> None:
    pauses: list[tuple[float, str]] = []
    control = RateControl(rpm=None, tpm=None, clock=vt.clock, on_pause=lambda s, why: pauses.append((s, why)))
    control.after_attempt(ANSWER, headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"})
    assert pauses == []  # under REPORTED_PAUSE_S
    assert REPORTED_PAUSE_S == 2.0
    control.after_attempt(ANSWER, headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"})
    assert pauses == [(30.0, "the host's rate-limit quota is spent")]
    control.after_attempt(ANSWER, headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "10s"})
    assert len(pauses) == 1  # inside the longer pause: nothing new to say


def test_a_pause_that_refusals_in_flight_extend_by_moments_is_said_once(vt: VirtualTime) -> None:
    pauses: list[tuple[float, str]] = []
    control = RateControl(rpm=None, tpm=None, clock=vt.clock, on_pause=lambda s, why: pauses.append((s, why)))
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    for _ in range(6):  # six answers in flight come back 10 ms apart, each with the same quota spent
        control.after_attempt(refused(30.0), headers=spent)
        vt.now += 0.01
    assert pauses == [(30.0, "the host's rate-limit quota is spent")]
    vt.now += 40.0  # that pause is over; the next one is news
    control.after_attempt(refused(30.0), headers=spent)
    assert len(pauses) == 2


def test_a_quota_spent_past_max_retry_after_announces_no_pause_the_run_stops(vt: VirtualTime) -> None:
    pauses: list[tuple[float, str]] = []
    control = RateControl(rpm=None, tpm=None, max_retry_after=600.0, clock=vt.clock,
                          on_pause=lambda s, why: pauses.append((s, why)))
    daily = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "41000"}
    control.after_attempt(Attempt(AttemptKind.REFUSED, "cap", 41_000.0, quota_spent=True), headers=daily)
    assert pauses == []
    assert control.limits.paused_until == float("-inf")


def test_refusals_of_a_quota_spent_past_max_retry_after_neither_pause_nor_lower_the_rate(vt: VirtualTime) -> None:
    # a run with many requests in flight meets a daily cap: each refusal stops the run; none may
    # announce a shared pause ("50 of the last 50 requests were refused") or teach the adaptive rate
    pauses: list[tuple[float, str]] = []
    control = RateControl(rpm=None, tpm=None, max_retry_after=600.0, clock=vt.clock,
                          on_pause=lambda s, why: pauses.append((s, why)))
    daily = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "41000"}
    for _ in range(200):
        control.window.record_send(vt.now)
        control.after_attempt(Attempt(AttemptKind.REFUSED, "cap", 41_000.0, quota_spent=True), headers=daily)
        vt.now += 0.01
    assert pauses == []
    assert control.limits.paused_until == float("-inf")
    assert control.adaptive is not None and control.adaptive.current_rps is None


# ---- reservations --------------------------------------------------------------------------------


def test_reservation_is_the_prompt_plus_the_expected_completion() -> None:
    assert RateControl(rpm=None, tpm=None).reservation(100) == 612
    assert RateControl(rpm=None, tpm=None, expected_completion_tokens=50).reservation(100) == 150


def test_reservation_follows_the_measured_mean_completion_of_billed_answers(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=None, clock=vt.clock)
    assert control.reservation(100) == 100 + 512  # a guess until the first answer
    control.after_attempt(ANSWER, completion_tokens=112)
    assert control.mean_completion == pytest.approx(112.0)  # the first answer replaces the guess
    control.after_attempt(refused(), completion_tokens=0)  # not billed: not an answer's length
    control.after_attempt(FAILED, completion_tokens=0)
    assert control.mean_completion == pytest.approx(112.0)
    control.after_attempt(Attempt(AttemptKind.INVALID, "junk"), completion_tokens=312)
    assert control.reservation(100) == 100 + int(112 + 0.05 * 200)


def test_a_request_that_waited_reserves_with_the_mean_known_when_it_goes(vt: VirtualTime) -> None:
    control = RateControl(rpm=None, tpm=6000, clock=vt.clock)  # 100 tokens/s, burst 100

    async def go() -> list[int]:
        first = await control.acquire(50)  # 50 + the 512 guess: the bucket goes into debt
        control.after_attempt(ANSWER, reserved=first, used=60, completion_tokens=10)
        second = await control.acquire(50)
        return [first, second]

    assert run(go) == [562, 60]


def test_long_retry_waits_are_said_once_per_later_end(vt: VirtualTime) -> None:
    said: list[tuple[float, str]] = []
    control = RateControl(rpm=None, tpm=None, clock=vt.clock, on_long_retry=lambda s, why: said.append((s, why)))
    control.note_retry(1.0, "HTTP 429: busy")  # short: not worth a line
    control.note_retry(600.0, "HTTP 429: busy")
    control.note_retry(600.0, "HTTP 429: busy")  # the same wait for another row: already said
    vt.now += 100.0
    control.note_retry(600.0, "HTTP 429: busy")  # ends 100 s later than the one said
    assert said == [(600.0, "HTTP 429: busy"), (600.0, "HTTP 429: busy")]
