"""RPM/TPM token buckets and the pauses a host orders (the adaptive rate: test_adaptive)."""

from __future__ import annotations

import pytest

from pipeline.ratecontrol.buckets import RateLimits, TokenBucket
from pipeline.ratecontrol.headers import RateLimitSnapshot


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


def test_a_lowered_rate_can_drop_what_is_banked() -> None:
    bucket = TokenBucket(per_minute=600, now=0.0)  # 10 banked
    bucket.set_rate(300, now=0.0, empty=True)
    assert bucket.available(now=0.0) == 1.0  # one may go now, the rest paced at 5 a second
    assert TokenBucket(per_minute=600, now=0.0, empty=True).available(now=0.0) == 1.0
