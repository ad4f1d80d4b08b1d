"""The cluster-wide limiter's rules (pure: no IO, time passed in): capacity leased in chunks.

One `SharedLimiter` serves every worker process of a run. It holds one `RateControl` (the RPM/TPM
buckets, the pauses a host orders, the adaptive rate, the circuit breaker) and feeds it exactly as
one process would: the attempts each process made since its last call are replayed into
`RateControl.after_attempt`, and capacity is taken with `RateLimits.reserve`, one request at a time,
up to the chunk a process asks for. So every rule is the local engine's, applied once for the cluster.

A process asks only when its own allowance runs out (`LeaseRequest`), gives back what it did not use
(requests, and tokens reserved but not spent: negative when it spent more, a debt), and gets a
`Grant` valid for ``lease_seconds`` from when it asked. Because a granted request may be sent that
much later, the shared bucket banks only ``1 - lease_seconds`` of a second: whenever grants are used,
the requests sent in any span fit a one-second bucket at the configured rate, the way hosts count.
When nothing can be granted, the answer says how long until a
useful chunk (half a second's worth, at least one request) has built up, so waiting processes
ask a few times a second, not once per request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.ratecontrol.control import LIMIT_MARGIN, RateControl
from pipeline.ratecontrol.decide import Attempt, AttemptKind

__all__ = ["AttemptNote", "Grant", "LeaseRequest", "SharedLimiter", "limit_headers"]

#: a waiting process is told to come back once this share of a second's requests has built up
#: (at most what the bucket banks).
USEFUL_CHUNK_S = 0.5


def limit_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The headers the rate rules read (x-ratelimit-*, retry-after*), as a small plain dict."""
    if not headers:
        return None
    kept = {k.lower(): v for k, v in headers.items() if k.lower().startswith(("x-ratelimit-", "retry-after"))}
    return kept or None


@dataclass(frozen=True, slots=True)
class AttemptNote:
    """One attempt as the rate rules see it (what `RateControl.after_attempt` takes)."""

    kind: str
    retry_after: float | None = None
    headers: dict[str, str] | None = None
    reserved: int = 0
    used: int = 0
    completion_tokens: int | None = None
    quota_spent: bool = False


@dataclass(slots=True)
class LeaseRequest:
    #: requests wanted (0: only give back and report)
    requests: int
    #: tokens reserved per request wanted
    tokens_each: int = 0
    #: allowance given back: requests not used, tokens not spent (negative: spent beyond it)
    returned_requests: int = 0
    returned_tokens: float = 0.0
    #: attempts made since the last lease
    notes: list[AttemptNote] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Grant:
    requests: int
    tokens: float
    #: when nothing was granted: seconds before asking again
    retry_in: float
    #: the cluster's mean completion tokens per answer (reservations use it)
    mean_completion: float
    #: seconds the grant may be used for; what is left after is given back
    valid_for: float


class SharedLimiter:
    """The limiter of a whole run (see the module docstring)."""

    def __init__(self, *, rpm: float | None, tpm: float | None, adaptive: bool = True, margin: float = LIMIT_MARGIN,
                 max_retry_after: float = 600.0, lease_seconds: float = 0.5, now: float = 0.0,
                 expected_completion_tokens: int = 512) -> None:
        if not 0 < lease_seconds < 1:
            raise ValueError(f"lease_seconds must be between 0 and 1, got {lease_seconds}")
        self._now = now
        # a request granted at t may be sent as late as t + lease_seconds, so the bucket may bank only
        # the rest of a second: sends in any span then stay within what a one-second bucket at the
        # configured rate accepts, however late each process uses its grants
        self.control = RateControl(rpm=rpm, tpm=tpm, adaptive=adaptive, margin=margin,
                                   max_retry_after=max_retry_after, clock=lambda: self._now,
                                   expected_completion_tokens=expected_completion_tokens,
                                   burst_seconds=1.0 - lease_seconds)
        self.lease_seconds = lease_seconds
        #: why the run stops, once a shard met a refusal of the whole run or a failed write: shards not
        #: begun by then are not begun
        self.halted: str | None = None
        #: the driver was asked to stop (SIGINT/SIGTERM): shards under way stop sending too, keeping their answers
        self.interrupted = False
        #: lease calls answered, requests granted, given back unused, attempts reported
        self.calls = 0
        self.granted = 0
        self.returned = 0
        self.reported = 0

    def halt(self, reason: str) -> None:
        """The run stops: the first reason is kept."""
        self.halted = self.halted or reason

    def interrupt(self) -> None:
        """The driver was signalled: no shard begins, and those under way stop as a local run would."""
        self.interrupted = True
        self.halt("interrupted")

    def lease(self, request: LeaseRequest, *, now: float) -> Grant:
        self._now = now = max(now, self._now)  # a clock that goes backwards does not undo time
        self.calls += 1
        control, limits = self.control, self.control.limits
        self._give_back(request, now)
        for note in request.notes:
            attempt = Attempt(AttemptKind(note.kind), retry_after=note.retry_after, quota_spent=note.quota_spent)
            control.after_attempt(attempt, headers=note.headers,
                                  reserved=note.reserved, used=note.used, completion_tokens=note.completion_tokens)
        self.reported += len(request.notes)
        granted, wait = 0, 0.0
        while granted < request.requests:
            wait = limits.reserve(request.tokens_each, now=now)
            if wait > 0.0:
                break
            control.window.record_send(now)
            granted += 1
        self.granted += granted
        retry_in = 0.0
        if granted == 0 and request.requests > 0:
            retry_in = max(wait, self._useful_chunk_wait(request.requests, now))
        return Grant(granted, float(granted * request.tokens_each), retry_in, control.mean_completion,
                     self.lease_seconds)

    def _give_back(self, request: LeaseRequest, now: float) -> None:
        limits = self.control.limits
        self.returned += max(0, request.returned_requests)
        if request.returned_requests > 0 and limits.requests is not None:
            limits.requests.refund(request.returned_requests, now=now)
        if limits.tokens is not None:
            if request.returned_tokens > 0:
                limits.tokens.refund(request.returned_tokens, now=now)
            elif request.returned_tokens < 0:
                limits.tokens.take(-request.returned_tokens, now=now)

    def _useful_chunk_wait(self, wanted: int, now: float) -> float:
        bucket = self.control.limits.requests
        if bucket is None:
            return 0.0
        useful = min(bucket.capacity, bucket.per_minute / 60.0 * USEFUL_CHUNK_S)
        chunk = max(1, min(wanted, math.floor(useful)))
        return bucket.wait_time(chunk, now=now)
