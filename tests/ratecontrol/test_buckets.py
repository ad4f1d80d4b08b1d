from __future__ import annotations

import heapq
from collections import deque

import pytest

from pipeline.limiter import AdaptiveRate, RateLimits, TokenBucket
from pipeline.retry import RateLimitSnapshot


def two_per_second() -> TokenBucket:
    return TokenBucket(per_minute=120, burst_seconds=2.0, now=0.0)  # 2/s, 4 banked


def test_bucket_starts_full_at_burst_capacity_of_at_least_one() -> None:
    bucket = two_per_second()
    assert (bucket.capacity, bucket.available(now=0.0), bucket.wait_time(4, now=0.0)) == (4.0, 4.0, 0.0)
    assert TokenBucket(per_minute=6, now=0.0).capacity == 1.0  # 0.1/s * 1 s < 1


def test_bucket_refills_continuously_up_to_capacity() -> None:
    bucket = two_per_second()
    bucket.take(4, now=0.0)
    assert [bucket.available(now=t) for t in (0.0, 0.5, 1.25, 100.0)] == [0.0, 1.0, 2.5, 4.0]
    bucket.take(4, now=100.0)
    assert bucket.available(now=99.0) == 0.0  # a clock going backwards refills nothing
    assert bucket.available(now=100.5) == 1.0


def test_bucket_wait_time_is_exact_and_enough() -> None:
    bucket = TokenBucket(per_minute=60, now=0.0)  # 1/s, capacity 1
    bucket.take(1, now=0.0)
    assert [bucket.wait_time(1, now=t) for t in (0.0, 0.25, 1.0)] == [1.0, 0.75, 0.0]
    bucket = TokenBucket(per_minute=7, now=0.0)  # awkward float rate
    bucket.take(1, now=0.0)
    assert bucket.wait_time(1, now=bucket.wait_time(1, now=0.0)) == 0.0


def test_cost_above_capacity_waits_for_a_full_bucket_and_its_debt_delays_the_next() -> None:
    bucket = two_per_second()
    bucket.take(4, now=0.0)
    assert bucket.wait_time(10, now=0.0) == 2.0  # never "forever"
    assert bucket.wait_time(10, now=2.0) == 0.0
    bucket.take(10, now=2.0)
    assert (bucket.available(now=2.0), bucket.wait_time(1, now=2.0)) == (-6.0, 3.5)


def test_bucket_refund_never_exceeds_capacity() -> None:
    bucket = two_per_second()
    bucket.take(3, now=0.0)
    bucket.refund(2, now=0.0)
    assert bucket.available(now=0.0) == 3.0
    bucket.refund(100, now=0.0)
    assert bucket.available(now=0.0) == 4.0


def test_bucket_set_rate_applies_from_now_on() -> None:
    bucket = TokenBucket(per_minute=60, burst_seconds=10.0, now=0.0)  # 1/s, capacity 10
    bucket.take(10, now=0.0)
    bucket.set_rate(120, now=2.0)  # 2 refilled at the old rate
    assert (bucket.available(now=2.0), bucket.available(now=3.0), bucket.capacity) == (2.0, 4.0, 20.0)
    bucket.set_rate(6, now=100.0)  # a smaller capacity clamps the level
    assert bucket.available(now=100.0) == 1.0


@pytest.mark.parametrize("per_minute", [0, -1, float("inf"), float("nan")])
def test_bucket_rejects_a_meaningless_rate(per_minute: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(per_minute=per_minute, now=0.0)


def unlimited() -> RateLimits:
    return RateLimits(rpm=None, tpm=None, now=0.0)


def test_rpm_budget_and_none_for_unlimited() -> None:
    assert all(unlimited().reserve(100_000, now=0.0) == 0.0 for _ in range(1000))
    limits = RateLimits(rpm=60, tpm=None, now=0.0)
    assert [limits.reserve(10, now=t) for t in (0.0, 0.0, 0.5, 1.0)] == [0.0, 1.0, 0.5, 0.0]  # asking took nothing


def test_tpm_budget_reserve_and_settle_both_ways() -> None:
    limits = RateLimits(rpm=None, tpm=6000, now=0.0)  # 100 tokens/s, capacity 100
    assert limits.reserve(80, now=0.0) == 0.0
    assert limits.reserve(80, now=0.0) == pytest.approx(0.6)
    limits.settle(80, 30, now=0.0)  # used less: 50 back
    assert limits.reserve(80, now=0.0) == pytest.approx(0.1)
    limits.settle(10, 50, now=0.0)  # used more: 40 charged
    limits.settle(20, 20, now=0.0)
    assert limits.tokens is not None and limits.tokens.available(now=0.0) == pytest.approx(30.0)


def test_reserve_takes_both_budgets_or_neither() -> None:
    limits = RateLimits(rpm=600, tpm=6000, now=0.0)  # 10 req/s (cap 10), 100 tok/s (cap 100)
    assert limits.reserve(100, now=0.0) == 0.0
    assert limits.reserve(50, now=0.0) == pytest.approx(0.5)  # tokens short
    assert limits.requests is not None and limits.requests.available(now=0.0) == 9.0  # no slot taken


def test_pause_keeps_the_later_instant_and_comes_before_the_buckets() -> None:
    limits = RateLimits(rpm=60, tpm=None, now=0.0)
    limits.pause_until(10.0)
    limits.pause_until(5.0)
    assert limits.paused_until == 10.0
    assert limits.reserve(1, now=4.0) == 6.0
    assert limits.requests is not None and limits.requests.available(now=4.0) == 1.0
    assert limits.reserve(1, now=10.0) == 0.0


def test_spent_quota_pauses_until_its_reset() -> None:
    limits = unlimited()
    limits.observe(
        RateLimitSnapshot(60, remaining_requests=0, reset_requests_s=2.0, remaining_tokens=0, reset_tokens_s=7.5),
        now=100.0,
    )
    assert limits.paused_until == 107.5
    assert limits.reserve(1, now=101.0) == 6.5
    limits.observe(RateLimitSnapshot(limit_requests=10, remaining_requests=0), now=101.0)  # no reset: ignored
    assert limits.paused_until == 107.5


def test_low_quota_spaces_requests_until_the_reset_or_a_healthy_answer() -> None:
    limits = unlimited()
    # 4 of 1000 requests left for the next 20 s: one start every 5 s
    limits.observe(RateLimitSnapshot(limit_requests=1000, remaining_requests=4, reset_requests_s=20.0), now=0.0)
    assert [limits.reserve(1, now=t) for t in (0.0, 1.0, 5.0, 20.0, 20.0)] == [0.0, 4.0, 0.0, 0.0, 0.0]
    limits.observe(RateLimitSnapshot(limit_requests=1000, remaining_requests=4, reset_requests_s=20.0), now=30.0)
    limits.reserve(1, now=30.0)
    limits.observe(RateLimitSnapshot(limit_requests=1000, remaining_requests=990, reset_requests_s=20.0), now=31.0)
    assert limits.reserve(1, now=31.0) == 0.0


def test_low_token_quota_is_counted_in_mean_sized_requests() -> None:
    limits = unlimited()
    assert limits.reserve(500, now=0.0) == 0.0
    # 2,000 of 100,000 tokens left for 10 s, requests of ~500 tokens: 4 requests, one per 2.5 s
    limits.observe(RateLimitSnapshot(limit_tokens=100_000, remaining_tokens=2000, reset_tokens_s=10.0), now=0.0)
    assert limits.reserve(500, now=1.0) == 1.5


def grow(rate: AdaptiveRate, t: float, *, until: float, step: float = 0.01) -> float:
    """Feed a success every ``step`` seconds from ``t`` until the rate reaches ``until``; the time then."""
    while (rate.current_rps or 0.0) < until:
        t += step
        rate.on_success(t)
    return t


def test_unlimited_until_the_first_throttle_and_never_below_the_floor() -> None:
    rate = AdaptiveRate()
    for t in range(100):
        rate.on_success(float(t))
    assert rate.current_rps is None
    assert rate.on_throttle(100.0, 40.0)
    assert (rate.ceiling_rps, rate.current_rps) == (40.0, 20.0)
    for t in range(10):
        rate.on_throttle(102.0 + t * 2, 40.0)
    assert rate.current_rps == 0.5  # min_rps


def test_a_burst_of_429s_decreases_once_and_late_ones_of_earlier_requests_are_ignored() -> None:
    rate = AdaptiveRate()
    assert rate.on_throttle(10.0, 40.0, sent_at=9.9)
    assert not any(rate.on_throttle(10.0 + i / 100, 40.0, sent_at=9.9 + i / 100) for i in range(1, 100))
    assert rate.current_rps == 20.0
    assert not rate.on_throttle(15.0, 40.0, sent_at=10.5)  # slow answer, sent at the old rate
    assert rate.on_throttle(15.0, 40.0, sent_at=11.5)  # sent at the new rate: still too fast
    assert rate.current_rps == 10.0


def test_ceiling_is_the_rate_the_throttled_request_was_sent_at() -> None:
    rate = AdaptiveRate(initial_rps=10.0)
    for i in range(1, 21):  # start-up growth, 10 %/s
        rate.on_success(i / 4)
    sent_rate = rate.current_rps
    for i in range(21, 29):
        rate.on_success(i / 4)
    assert rate.on_throttle(7.1, 100.0, sent_at=5.1)  # answered two seconds later
    assert sent_rate is not None and sent_rate > 10.0 and rate.ceiling_rps == pytest.approx(sent_rate)


def test_rate_is_held_during_the_cooldown_then_recovers_fast() -> None:
    rate = AdaptiveRate(cooldown_s=1.0)
    rate.on_throttle(0.0, 100.0)
    for i in range(1, 10):
        rate.on_success(i / 10)
    assert rate.current_rps == 50.0
    assert grow(rate, 1.0, until=90.0) < 7.0


@pytest.mark.parametrize(("ceiling", "step"), [(100.0, 0.01), (2.0, 0.5)])
def test_probe_near_the_ceiling_takes_at_least_10_s_and_90_successes(ceiling: float, step: float) -> None:
    rate = AdaptiveRate()
    rate.on_throttle(0.0, ceiling)
    reached = grow(rate, 1.0, until=0.95 * ceiling, step=step)
    elapsed = grow(rate, reached, until=ceiling, step=step) - reached
    assert elapsed >= 9.0 and elapsed / step >= 90


def test_a_ceiling_passed_without_throttle_is_forgotten() -> None:
    rate = AdaptiveRate()
    rate.on_throttle(0.0, 10.0)
    t = grow(rate, 1.0, until=10.2) + 0.01
    rate.on_success(t)  # 2 % past the ceiling: forgotten
    assert rate.ceiling_rps is None
    before = rate.current_rps
    rate.on_success(t + 1.0)
    assert before is not None and rate.current_rps == pytest.approx(before * 1.1)  # 10 %/s again


def test_no_runaway_while_the_caller_sends_far_less_than_allowed() -> None:
    rate = AdaptiveRate(initial_rps=10.0)
    for t in range(1, 1000):
        rate.on_success(float(t), observed_rps=1.0)
    assert rate.current_rps == 16.0
    blind = AdaptiveRate(initial_rps=10.0)
    for t in range(1, 200_000, 10):  # days without observed_rps: still a usable rate
        blind.on_success(float(t))
    assert blind.current_rps == 1e6
    silent = AdaptiveRate(initial_rps=10.0)
    silent.on_success(0.0)
    silent.on_success(3600.0)
    assert silent.current_rps == pytest.approx(11.0)  # a silence teaches one second's worth, not an hour's


def test_first_throttle_before_any_answer_starts_blind_and_grows_fast() -> None:
    rate = AdaptiveRate(min_rps=0.5)
    assert rate.on_throttle(0.1, 0.0)  # 429s come back before the first success
    assert (rate.current_rps, rate.ceiling_rps) == (0.5, None)
    t = grow(rate, 1.1, until=100.0)
    assert t < 12.0  # doubling about every second, not 10 % a second
    assert rate.on_throttle(t, 0.0)
    assert rate.ceiling_rps == pytest.approx(2 * (rate.current_rps or 0.0))


class HiddenLimitServer:
    """Accepts at most ``limit`` requests a second (a token bucket of ``burst_seconds``), 429s the rest."""

    def __init__(self, limit: float, burst_seconds: float) -> None:
        self.limit, self.capacity, self.updated = limit, max(1.0, limit * burst_seconds), 0.0
        self.level = self.capacity

    def accepts(self, now: float) -> bool:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.limit)
        self.updated = now
        if self.level < 1.0:
            return False
        self.level -= 1.0
        return True


def simulate(limit: float, *, burst_seconds: float, precise: bool, latency: float = 0.5) -> dict[bool, int]:
    """Send paced at AdaptiveRate's rate (10·limit while unlimited) for 120 simulated seconds; count the
    answers (True: ok, False: 429) of the last minute. Successes answer after ``latency``, 429s after
    50 ms. A ``precise`` caller passes ``sent_at`` and counts requests sent and not throttled over
    max(2 s, 10 requests); the other passes successes per second over 2 s and no ``sent_at``.
    """
    rate, server = AdaptiveRate(), HiddenLimitServer(limit, burst_seconds)
    answers: list[tuple[float, int, bool, float]] = []  # (arrives, seq, ok, sent_at)
    sent, throttled, succeeded = deque[float](), deque[float](), deque[float]()
    late, next_send, seq = {True: 0, False: 0}, 0.0, 0
    while next_send < 120.0 or answers:
        if next_send < 120.0 and (not answers or next_send <= answers[0][0]):
            ok = server.accepts(next_send)
            sent.append(next_send)
            seq += 1
            heapq.heappush(answers, (next_send + (latency if ok else 0.05), seq, ok, next_send))
            next_send += 1.0 / (rate.current_rps or 10.0 * limit)
            continue
        now, _, ok, sent_at = heapq.heappop(answers)
        (succeeded if ok else throttled).append(now if ok else sent_at)
        window = max(2.0, 10.0 / (rate.current_rps or 10.0 * limit)) if precise else 2.0
        for times in (sent, throttled, succeeded):
            while times and times[0] < now - window:
                times.popleft()
        observed = (len(sent) - len(throttled)) / min(window, now) if precise else len(succeeded) / window
        if ok:
            rate.on_success(now, observed_rps=observed)
        else:
            rate.on_throttle(now, observed, sent_at=sent_at if precise else None)
        late[ok] += 60.0 <= now < 120.0
    return late


@pytest.mark.parametrize("limit", [2.0, 10.0, 50.0, 250.0])
@pytest.mark.parametrize("burst_seconds", [1.0, 0.0], ids=["burst-1s", "no-burst"])
@pytest.mark.parametrize("precise", [True, False], ids=["sent-at", "successes-only"])
def test_converges_near_a_hidden_limit_with_few_429s(limit: float, burst_seconds: float, precise: bool) -> None:
    late = simulate(limit, burst_seconds=burst_seconds, precise=precise)
    assert late[True] / 60.0 >= 0.8 * limit
    assert late[False] < 0.02 * (late[True] + late[False])
