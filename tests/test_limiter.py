from __future__ import annotations

import heapq
from collections import deque

import pytest

from pipeline.limiter import AdaptiveRate, RateLimits, TokenBucket
from pipeline.retry import RateLimitSnapshot

# ---- TokenBucket ---------------------------------------------------------------------------------


def test_bucket_starts_full_at_burst_capacity() -> None:
    bucket = TokenBucket(per_minute=120, burst_seconds=2.0, now=0.0)  # 2/s, 4 banked
    assert bucket.capacity == 4.0
    assert bucket.available(now=0.0) == 4.0
    assert bucket.wait_time(4, now=0.0) == 0.0


def test_bucket_capacity_is_at_least_one() -> None:
    assert TokenBucket(per_minute=6, now=0.0).capacity == 1.0  # 0.1/s * 1 s < 1


def test_bucket_refills_continuously_up_to_capacity() -> None:
    bucket = TokenBucket(per_minute=120, burst_seconds=2.0, now=0.0)
    bucket.take(4, now=0.0)
    assert bucket.available(now=0.0) == 0.0
    assert bucket.available(now=0.5) == 1.0
    assert bucket.available(now=1.25) == 2.5
    assert bucket.available(now=100.0) == 4.0


def test_bucket_wait_time_is_exact_and_enough() -> None:
    bucket = TokenBucket(per_minute=60, now=0.0)  # 1/s, capacity 1
    bucket.take(1, now=0.0)
    assert bucket.wait_time(1, now=0.0) == 1.0
    assert bucket.wait_time(1, now=0.25) == 0.75
    assert bucket.wait_time(1, now=1.0) == 0.0
    bucket = TokenBucket(per_minute=7, now=0.0)  # awkward float rate
    bucket.take(1, now=0.0)
    wait = bucket.wait_time(1, now=0.0)
    assert bucket.wait_time(1, now=wait) == 0.0


def test_bucket_debt_delays_later_takers() -> None:
    bucket = TokenBucket(per_minute=120, burst_seconds=2.0, now=0.0)
    bucket.take(10, now=0.0)  # settling a bigger bill than reserved
    assert bucket.available(now=0.0) == -6.0
    assert bucket.wait_time(1, now=0.0) == 3.5


def test_cost_above_capacity_waits_for_a_full_bucket_then_goes_into_debt() -> None:
    bucket = TokenBucket(per_minute=120, burst_seconds=2.0, now=0.0)
    bucket.take(4, now=0.0)
    assert bucket.wait_time(10, now=0.0) == 2.0  # never "forever"
    assert bucket.wait_time(10, now=2.0) == 0.0
    bucket.take(10, now=2.0)
    assert bucket.available(now=2.0) == -6.0


def test_bucket_refund_never_exceeds_capacity() -> None:
    bucket = TokenBucket(per_minute=120, burst_seconds=2.0, now=0.0)
    bucket.take(3, now=0.0)
    bucket.refund(2, now=0.0)
    assert bucket.available(now=0.0) == 3.0
    bucket.refund(100, now=0.0)
    assert bucket.available(now=0.0) == 4.0


def test_bucket_set_rate_applies_from_now_on() -> None:
    bucket = TokenBucket(per_minute=60, burst_seconds=10.0, now=0.0)  # 1/s, capacity 10
    bucket.take(10, now=0.0)
    bucket.set_rate(120, now=2.0)  # 2 refilled at the old rate
    assert bucket.available(now=2.0) == 2.0
    assert bucket.available(now=3.0) == 4.0  # 2/s from now on
    assert bucket.capacity == 20.0
    bucket.set_rate(6, now=100.0)  # a smaller capacity clamps the level
    assert bucket.available(now=100.0) == 1.0


def test_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(per_minute=60, now=10.0)
    bucket.take(1, now=10.0)
    assert bucket.available(now=9.0) == 0.0
    assert bucket.available(now=10.5) == 0.5


@pytest.mark.parametrize("per_minute", [0, -1, float("inf"), float("nan")])
def test_bucket_rejects_a_meaningless_rate(per_minute: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(per_minute=per_minute, now=0.0)


# ---- RateLimits ----------------------------------------------------------------------------------


def test_unlimited_never_waits() -> None:
    limits = RateLimits(rpm=None, tpm=None, now=0.0)
    assert all(limits.reserve(100_000, now=0.0) == 0.0 for _ in range(1000))


def test_rpm_budget() -> None:
    limits = RateLimits(rpm=60, tpm=None, now=0.0)
    assert limits.reserve(10, now=0.0) == 0.0
    assert limits.reserve(10, now=0.0) == 1.0
    assert limits.reserve(10, now=0.5) == 0.5  # asking again took nothing
    assert limits.reserve(10, now=1.0) == 0.0


def test_tpm_budget_reserve_and_settle_both_ways() -> None:
    limits = RateLimits(rpm=None, tpm=6000, now=0.0)  # 100 tokens/s, capacity 100
    assert limits.reserve(80, now=0.0) == 0.0
    assert limits.reserve(80, now=0.0) == pytest.approx(0.6)
    limits.settle(80, 30, now=0.0)  # used less: 50 back
    assert limits.reserve(80, now=0.0) == pytest.approx(0.1)
    limits.settle(10, 50, now=0.0)  # used more: 40 charged
    assert limits.tokens is not None
    assert limits.tokens.available(now=0.0) == pytest.approx(30.0)
    limits.settle(20, 20, now=0.0)
    assert limits.tokens.available(now=0.0) == pytest.approx(30.0)


def test_reserve_takes_both_budgets_or_neither() -> None:
    limits = RateLimits(rpm=600, tpm=6000, now=0.0)  # 10 req/s (cap 10), 100 tok/s (cap 100)
    assert limits.reserve(100, now=0.0) == 0.0
    assert limits.reserve(50, now=0.0) == pytest.approx(0.5)  # tokens short
    assert limits.requests is not None
    assert limits.requests.available(now=0.0) == 9.0  # the refused request took no request slot


def test_pause_keeps_the_later_instant() -> None:
    limits = RateLimits(rpm=None, tpm=None, now=0.0)
    limits.pause_until(10.0)
    limits.pause_until(5.0)
    assert limits.paused_until == 10.0
    assert limits.reserve(1, now=4.0) == 6.0
    assert limits.reserve(1, now=10.0) == 0.0


def test_pause_applies_before_the_buckets() -> None:
    limits = RateLimits(rpm=60, tpm=None, now=0.0)
    limits.pause_until(3.0)
    assert limits.reserve(1, now=1.0) == 2.0
    assert limits.requests is not None
    assert limits.requests.available(now=1.0) == 1.0


def test_spent_quota_pauses_until_its_reset() -> None:
    limits = RateLimits(rpm=None, tpm=None, now=0.0)
    snapshot = RateLimitSnapshot(
        limit_requests=60, remaining_requests=0, reset_requests_s=2.0, remaining_tokens=0, reset_tokens_s=7.5
    )
    limits.observe(snapshot, now=100.0)
    assert limits.paused_until == 107.5
    assert limits.reserve(1, now=101.0) == 6.5


def test_low_quota_spaces_requests_until_the_reset() -> None:
    limits = RateLimits(rpm=None, tpm=None, now=0.0)
    # 4 of 1000 requests left for the next 20 s: one start every 5 s
    limits.observe(RateLimitSnapshot(limit_requests=1000, remaining_requests=4, reset_requests_s=20.0), now=0.0)
    assert limits.reserve(1, now=0.0) == 0.0
    assert limits.reserve(1, now=1.0) == 4.0
    assert limits.reserve(1, now=5.0) == 0.0
    assert limits.reserve(1, now=20.0) == 0.0  # the reset passed: no more spacing
    assert limits.reserve(1, now=20.0) == 0.0


def test_healthy_quota_stops_the_spacing() -> None:
    limits = RateLimits(rpm=None, tpm=None, now=0.0)
    limits.observe(RateLimitSnapshot(limit_requests=1000, remaining_requests=4, reset_requests_s=20.0), now=0.0)
    limits.reserve(1, now=0.0)
    limits.observe(RateLimitSnapshot(limit_requests=1000, remaining_requests=990, reset_requests_s=20.0), now=1.0)
    assert limits.reserve(1, now=1.0) == 0.0


def test_low_token_quota_is_counted_in_mean_sized_requests() -> None:
    limits = RateLimits(rpm=None, tpm=None, now=0.0)
    assert limits.reserve(500, now=0.0) == 0.0
    # 2,000 of 100,000 tokens left for 10 s, requests of ~500 tokens: 4 requests, one per 2.5 s
    limits.observe(RateLimitSnapshot(limit_tokens=100_000, remaining_tokens=2000, reset_tokens_s=10.0), now=0.0)
    assert limits.reserve(500, now=1.0) == 1.5


def test_snapshot_without_remaining_or_reset_changes_nothing() -> None:
    limits = RateLimits(rpm=None, tpm=None, now=0.0)
    limits.observe(RateLimitSnapshot(limit_requests=10, remaining_requests=0), now=0.0)
    limits.observe(RateLimitSnapshot(), now=0.0)
    assert limits.reserve(1, now=0.0) == 0.0
    assert limits.reserve(1, now=0.0) == 0.0


def test_set_request_rate_adds_changes_and_removes_the_rpm_budget() -> None:
    limits = RateLimits(rpm=None, tpm=None, now=0.0)
    limits.set_request_rate(60, now=0.0)
    assert limits.reserve(1, now=0.0) == 0.0
    assert limits.reserve(1, now=0.0) == 1.0
    limits.set_request_rate(240, now=0.0)
    assert limits.reserve(1, now=0.0) == 0.25
    limits.set_request_rate(None, now=0.0)
    assert limits.reserve(1, now=0.0) == 0.0


# ---- AdaptiveRate --------------------------------------------------------------------------------


def test_unlimited_until_the_first_throttle() -> None:
    rate = AdaptiveRate()
    for t in range(100):
        rate.on_success(float(t))
    assert rate.current_rps is None
    assert rate.on_throttle(100.0, 40.0)
    assert rate.ceiling_rps == 40.0
    assert rate.current_rps == 20.0


def test_a_burst_of_429s_decreases_once() -> None:
    rate = AdaptiveRate()
    assert rate.on_throttle(10.0, 40.0, sent_at=9.9)
    assert not any(rate.on_throttle(10.0 + i / 100, 40.0, sent_at=9.9 + i / 100) for i in range(1, 100))
    assert rate.current_rps == 20.0


def test_late_429s_of_requests_sent_before_the_decrease_are_ignored() -> None:
    rate = AdaptiveRate(cooldown_s=1.0)
    rate.on_throttle(10.0, 40.0, sent_at=9.9)
    assert not rate.on_throttle(15.0, 40.0, sent_at=10.5)  # slow answer, sent at the old rate
    assert rate.on_throttle(15.0, 40.0, sent_at=11.5)  # sent at the new rate: still too fast
    assert rate.current_rps == 10.0


def test_ceiling_is_the_rate_the_throttled_request_was_sent_at() -> None:
    rate = AdaptiveRate(initial_rps=10.0)
    for i in range(1, 21):  # start-up growth, 10 %/s
        rate.on_success(i / 4)
    sent_rate = rate.current_rps
    assert sent_rate is not None and sent_rate > 10.0
    for i in range(21, 29):
        rate.on_success(i / 4)
    assert rate.on_throttle(7.1, 100.0, sent_at=5.1)  # answered two seconds later
    assert rate.ceiling_rps == pytest.approx(sent_rate)


def test_rate_never_goes_below_the_floor() -> None:
    rate = AdaptiveRate(min_rps=0.5)
    rate.on_throttle(0.0, 0.6)
    for t in range(1, 10):
        rate.on_throttle(float(t) * 2, 0.1)
    assert rate.current_rps == 0.5


def test_rate_is_held_during_the_cooldown_then_recovers_fast() -> None:
    rate = AdaptiveRate(cooldown_s=1.0)
    rate.on_throttle(0.0, 100.0)
    for i in range(1, 10):
        rate.on_success(i / 10)
    assert rate.current_rps == 50.0
    t = 1.0
    while t < 7.0:
        t += 0.01
        rate.on_success(t)
    assert rate.current_rps is not None and rate.current_rps > 90.0


def test_probe_near_the_ceiling_is_slow() -> None:
    rate = AdaptiveRate()
    rate.on_throttle(0.0, 100.0)
    t = 1.0
    while (rate.current_rps or 0) < 95.0:
        t += 0.01
        rate.on_success(t)
    reached = t
    while (rate.current_rps or 0) < 100.0:
        t += 0.01
        rate.on_success(t)
    assert t - reached >= 9.0


def test_probe_is_slow_in_requests_too_at_low_rates() -> None:
    rate = AdaptiveRate()
    rate.on_throttle(0.0, 2.0)
    t, successes = 1.0, 0
    while (rate.current_rps or 0) < 1.9:
        t += 0.5
        rate.on_success(t)
    while (rate.current_rps or 0) < 2.0:
        t += 0.5
        successes += 1
        rate.on_success(t)
    assert successes >= 90


def test_a_ceiling_passed_without_throttle_is_forgotten() -> None:
    rate = AdaptiveRate()
    rate.on_throttle(0.0, 10.0)
    t = 1.0
    while rate.ceiling_rps is not None:
        t += 0.01
        rate.on_success(t)
    before = rate.current_rps
    assert before is not None
    rate.on_success(t + 1.0)
    assert rate.current_rps == pytest.approx(before * 1.1)


def test_no_growth_while_the_caller_sends_far_less_than_allowed() -> None:
    rate = AdaptiveRate(initial_rps=10.0)
    for t in range(1, 100):
        rate.on_success(float(t), observed_rps=1.0)
    assert rate.current_rps == 10.0


def test_a_silence_teaches_nothing() -> None:
    rate = AdaptiveRate(initial_rps=10.0)
    rate.on_success(0.0)
    rate.on_success(3600.0)
    assert rate.current_rps == pytest.approx(11.0)  # one second's worth, not an hour's


# ---- convergence against a hidden limit ----------------------------------------------------------


class HiddenLimitServer:
    """A server that accepts at most ``limit`` requests a second (a token bucket) and 429s the rest."""

    def __init__(self, limit: float, burst_seconds: float) -> None:
        self.limit = limit
        self.capacity = max(1.0, limit * burst_seconds)
        self.level = self.capacity
        self.updated = 0.0

    def accepts(self, now: float) -> bool:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.limit)
        self.updated = now
        if self.level >= 1.0:
            self.level -= 1.0
            return True
        return False


def simulate(limit: float, *, burst_seconds: float, latency: float = 0.5, seconds: float = 120.0) -> dict:
    """Send paced at AdaptiveRate's rate (10·limit while unlimited) in simulated time.

    Successes answer after ``latency``, 429s after 50 ms. ``observed_rps`` is what a real caller
    would measure: requests sent and not throttled over the last max(2 s, 10 requests).
    """
    rate = AdaptiveRate()
    server = HiddenLimitServer(limit, burst_seconds)
    answers: list[tuple[float, int, bool, float]] = []  # (arrives, seq, ok, sent_at)
    sent: deque[float] = deque()
    throttled: deque[float] = deque()
    late = {"ok": 0, "throttled": 0}
    next_send, seq = 0.0, 0
    while next_send < seconds or answers:
        if next_send < seconds and (not answers or next_send <= answers[0][0]):
            now = next_send
            ok = server.accepts(now)
            sent.append(now)
            seq += 1
            heapq.heappush(answers, (now + (latency if ok else 0.05), seq, ok, now))
            next_send = now + 1.0 / (rate.current_rps or 10.0 * limit)
            continue
        now, _, ok, sent_at = heapq.heappop(answers)
        window = max(2.0, 10.0 / (rate.current_rps or 10.0 * limit))
        while sent and sent[0] < now - window:
            sent.popleft()
        while throttled and throttled[0] < now - window:
            throttled.popleft()
        if not ok:
            throttled.append(sent_at)
        observed = (len(sent) - len(throttled)) / min(window, max(now, 1e-9))
        if ok:
            rate.on_success(now, observed_rps=observed)
        else:
            rate.on_throttle(now, observed, sent_at=sent_at)
        if seconds - 60.0 <= now < seconds:
            late["ok" if ok else "throttled"] += 1
    return late


@pytest.mark.parametrize("limit", [2.0, 10.0, 50.0, 250.0])
@pytest.mark.parametrize("burst_seconds", [1.0, 0.0], ids=["burst-1s", "no-burst"])
def test_converges_near_a_hidden_limit_with_few_429s(limit: float, burst_seconds: float) -> None:
    late = simulate(limit, burst_seconds=burst_seconds)
    requests = late["ok"] + late["throttled"]
    assert late["ok"] / 60.0 >= 0.8 * limit
    assert late["throttled"] < 0.02 * requests
