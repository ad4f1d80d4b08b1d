"""The shared limiter's rules with a clock passed in: chunks, give-backs, shared pauses, adaptive rate."""

from __future__ import annotations

import pytest

from pipeline.engines.ray.leases import AttemptNote, LeaseRequest, SharedLimiter, limit_headers


def test_unlimited_grants_the_whole_chunk() -> None:
    limiter = SharedLimiter(rpm=None, tpm=None)
    grant = limiter.lease(LeaseRequest(32, 100), now=0.0)
    assert (grant.requests, grant.tokens, grant.retry_in) == (32, 3200.0, 0.0)


def test_grants_over_a_minute_never_pass_the_configured_rpm() -> None:
    limiter = SharedLimiter(rpm=600, tpm=None, margin=1.0)
    granted, now = 0, 0.0
    while now < 60.0:
        grant = limiter.lease(LeaseRequest(8, 10), now=now)
        granted += grant.requests
        now += grant.retry_in if grant.requests == 0 else 0.01
    assert 590 <= granted <= 600 + 10  # a minute's rate plus the one-second burst the bucket starts with


def test_an_empty_bucket_says_when_a_useful_chunk_is_ready() -> None:
    limiter = SharedLimiter(rpm=1200, tpm=None, margin=1.0)  # 20/s, capacity 10 (half a second's lease)
    assert limiter.lease(LeaseRequest(100, 1), now=0.0).requests == 10
    grant = limiter.lease(LeaseRequest(100, 1), now=0.0)
    assert grant.requests == 0
    assert grant.retry_in == pytest.approx(10 / 20)  # half a second's worth, not one request


def test_given_back_requests_are_granted_again() -> None:
    limiter = SharedLimiter(rpm=600, tpm=None, margin=1.0)  # capacity 5
    assert limiter.lease(LeaseRequest(10, 1), now=0.0).requests == 5
    assert limiter.lease(LeaseRequest(10, 1), now=0.0).requests == 0
    assert limiter.lease(LeaseRequest(10, 1, returned_requests=4), now=0.0).requests == 4


def test_tokens_spent_beyond_the_grant_are_a_debt_on_the_token_bucket() -> None:
    limiter = SharedLimiter(rpm=None, tpm=120_000, margin=1.0)  # 2,000 tokens/s, capacity 1,000
    assert limiter.lease(LeaseRequest(1, 400), now=0.0).requests == 1
    limiter.lease(LeaseRequest(0, 0, returned_tokens=-500.0), now=0.0)  # spent 900 of 400 reserved
    grant = limiter.lease(LeaseRequest(1, 200), now=0.0)
    assert grant.requests == 0  # 1000 - 400 - 500 = 100 left, 200 wanted
    assert grant.retry_in == pytest.approx(0.05)


def test_settled_usage_refunds_the_token_bucket() -> None:
    limiter = SharedLimiter(rpm=None, tpm=120_000, margin=1.0)  # capacity 1,000
    assert limiter.lease(LeaseRequest(2, 500), now=0.0).requests == 2
    assert limiter.lease(LeaseRequest(1, 500), now=0.0).requests == 0
    note = AttemptNote("answer", reserved=500, used=100, completion_tokens=50)
    assert limiter.lease(LeaseRequest(1, 500, notes=[note, note]), now=0.0).requests == 1


def test_an_empty_quota_reported_by_one_process_pauses_every_process() -> None:
    limiter = SharedLimiter(rpm=None, tpm=None)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "3s"}
    note = AttemptNote("answer", headers=headers)
    assert limiter.lease(LeaseRequest(0, 0, notes=[note]), now=10.0).requests == 0
    grant = limiter.lease(LeaseRequest(4, 1), now=10.5)  # another process
    assert grant.requests == 0
    assert grant.retry_in == pytest.approx(2.5)
    assert limiter.lease(LeaseRequest(4, 1), now=13.0).requests == 4


def test_pushback_reported_by_several_processes_lowers_the_shared_rate() -> None:
    limiter = SharedLimiter(rpm=None, tpm=None, adaptive=True)
    now = 0.0
    for _ in range(40):  # two processes asking 5 a step (100/s) of a host taking 6 a step (60/s)
        taken = 0
        for _process in range(2):
            grant = limiter.lease(LeaseRequest(5, 1), now=now)
            notes = []
            for _request in range(grant.requests):
                taken += 1
                notes.append(AttemptNote("answer" if taken <= 6 else "refused", completion_tokens=10))
            limiter.lease(LeaseRequest(0, 0, notes=notes), now=now + 0.05)
        now += 0.1
    assert limiter.control.adaptive is not None and limiter.control.adaptive.decreases >= 1
    assert limiter.control.limits.requests is not None  # a shared request bucket now holds everyone


def test_limit_headers_keeps_only_what_the_rate_rules_read() -> None:
    headers = {"Content-Type": "application/json", "X-RateLimit-Remaining-Requests": "3", "Retry-After": "2"}
    assert limit_headers(headers) == {"x-ratelimit-remaining-requests": "3", "retry-after": "2"}
    assert limit_headers({"content-type": "x"}) is None


class _HostBucket:
    """A host's limit as the simulator counts it: ``rpm`` a minute, a second's worth banked."""

    def __init__(self, rpm: float) -> None:
        self.rate = self.capacity = self.level = rpm / 60.0
        self.stamp = 0.0
        self.refused = 0

    def arrive(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1.0 - 1e-9:
            self.level -= 1.0
        else:
            self.refused += 1


@pytest.mark.parametrize("delay", [0.0, 0.25, 0.499])
def test_grants_used_as_late_as_allowed_never_pass_a_one_second_host_limit(delay: float) -> None:
    # two processes lease 16 at a time, the second starting later (an actor slower to start); the
    # first holds every grant ``delay`` seconds (a busy event loop, connections still opening): held
    # grants must not add to the burst the shared bucket banks meanwhile
    rpm = 1200
    limiter = SharedLimiter(rpm=rpm, tpm=None, margin=1.0)
    host = _HostBucket(rpm)
    sends: list[float] = []
    ask = [0.0, 0.8]
    while min(ask) < 20.0:
        process = ask.index(min(ask))
        now = ask[process]
        grant = limiter.lease(LeaseRequest(16, 1), now=now)
        sends += [now + (0.0 if process else delay)] * grant.requests
        ask[process] = now + (grant.retry_in if grant.requests == 0 else 0.05)
    for when in sorted(sends):
        host.arrive(when)
    assert len(sends) >= 20 * rpm / 60 * 0.98
    assert host.refused == 0


def test_a_halt_keeps_the_first_reason() -> None:
    limiter = SharedLimiter(rpm=None, tpm=None)
    assert limiter.halted is None
    limiter.halt("HTTP 401: bad key")
    limiter.halt("disk full")
    assert limiter.halted == "HTTP 401: bad key"


def test_an_interrupt_begins_no_shard_and_tells_those_under_way_to_stop() -> None:
    limiter = SharedLimiter(rpm=None, tpm=None)
    assert not limiter.interrupted
    limiter.interrupt()
    assert limiter.interrupted and limiter.halted == "interrupted"
