"""`RateControl`: the one object workers consult before and after each attempt (the async edge).

Before an attempt, `acquire` waits for the configured RPM/TPM buckets, a pause ordered by the
host, the adaptive rate and the circuit breaker. After it, `after_attempt` feeds every rule from
one place. With no limit configured and no pushback heard, `acquire` returns at once.

What slows everyone down, and what does not:
- a refused request waits for its own retry (see `decide`); it does not pause anybody else;
- ``x-ratelimit-remaining-*`` at 0 pauses everyone until its reset (a quota we all share);
- pushback that is a large share of recent attempts lowers the adaptive rate; when the host refuses
  nearly everything and said how long, everyone also pauses that long (capped by ``max_retry_after``);
- most recent attempts failing opens the circuit breaker (everyone pauses, the cool-down doubles).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping

from pipeline.ratecontrol.adaptive import AdaptiveRate, LoadWindow
from pipeline.ratecontrol.breaker import CircuitBreaker
from pipeline.ratecontrol.buckets import RateLimits, TokenBucket
from pipeline.ratecontrol.decide import FAILURES, PUSHBACK, Attempt, AttemptKind, spent_past
from pipeline.ratecontrol.headers import read_rate_limit_headers

#: fraction of a configured RPM/TPM a run aims for: a server counting the same limit with its own
#: clock then never sees a request early.
LIMIT_MARGIN = 0.985
#: share of recent attempts refused that makes everyone wait for the host's Retry-After.
SHARED_PAUSE_SHARE = 0.9
#: shared pauses at least this long are reported, one line each.
REPORTED_PAUSE_S = 2.0
#: a request's own wait before its retry is reported from this long on.
REPORTED_RETRY_S = 30.0
_BILLED = frozenset({AttemptKind.ANSWER, AttemptKind.INVALID, AttemptKind.TRUNCATED, AttemptKind.FILTERED})


class RateControl:
    def __init__(self, *, rpm: float | None, tpm: float | None, adaptive: bool = True,
                 margin: float = 1.0, max_retry_after: float = 600.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_pause: Callable[[float, str], None] | None = None,
                 on_long_retry: Callable[[float, str], None] | None = None,
                 expected_completion_tokens: int = 512, burst_seconds: float = 1.0) -> None:
        self._clock = clock
        now = clock()
        self.limits = RateLimits(rpm=rpm and rpm * margin, tpm=tpm and tpm * margin, now=now,
                                 burst_seconds=burst_seconds)
        self._burst_seconds = burst_seconds
        self._configured_rpm = rpm * margin if rpm else None
        self.adaptive = AdaptiveRate() if adaptive else None
        self.window = LoadWindow(self.adaptive.min_samples, self.adaptive.window_s) if self.adaptive else LoadWindow()
        self.breaker = CircuitBreaker()
        self.max_retry_after = max_retry_after
        self._on_pause = on_pause
        self._on_long_retry = on_long_retry
        self._long_retries_until = -math.inf  # the end of the longest retry wait reported so far
        self._pause_said_until = -math.inf  # the end of the last shared pause reported
        #: True once any limit applies; False keeps `acquire` on its fast path.
        self._engaged = bool(rpm or tpm)
        self._applied = self._configured_rpm  # the request rate the bucket holds now
        #: moving mean of completion tokens per billed answer (reservations use it)
        self.mean_completion = float(expected_completion_tokens)
        self._measured = False
        self._line = asyncio.Lock()  # requests waiting for quota, first come first served
        self.refused = 0
        self.shared_pauses = 0
        self.breaker_pauses = 0

    def reservation(self, prompt_tokens: int) -> int:
        """Tokens to reserve for a request: its prompt plus what answers measure on average."""
        return prompt_tokens + int(self.mean_completion)

    async def acquire(self, prompt_tokens: int, *, stop: asyncio.Event | None = None) -> int | None:
        """Wait until a request with a prompt of about ``prompt_tokens`` tokens may start, take its quota
        and return the tokens reserved (to settle once the answer's usage is known); None, with nothing
        taken, when ``stop`` is set while waiting (a signal during a pause ends the wait at once).

        The reservation is made when the quota is taken, with the mean completion measured by then:
        a request that waited does not hold a guess from before the first answers came.
        """
        limits = self.limits
        now = self._clock()
        if not self._engaged and now >= limits.paused_until:
            self.window.record_send(now)
            return self.reservation(prompt_tokens)
        # One request at a time asks the buckets; the others wait their turn in order. Without the
        # line, every waiter wakes for each freed unit, one takes it and the rest sleep again: with
        # 64 workers under a low rate that is hundreds of thousands of wake-ups a minute.
        async with self._line:
            while True:
                if stop is not None and stop.is_set():
                    return None
                now = self._clock()  # not the time this request joined the line
                tokens = self.reservation(prompt_tokens)
                wait = limits.reserve(tokens, now=now)
                if wait <= 0.0:
                    self.window.record_send(now)  # sent now, at the rate of now: not when it joined the line
                    return tokens
                if stop is None:
                    await asyncio.sleep(wait)
                elif await _stopped_within(stop, wait):
                    return None

    def after_attempt(self, attempt: Attempt, *, headers: Mapping[str, str] | None = None,
                      reserved: int = 0, used: int = 0, completion_tokens: int | None = None) -> None:
        """Feed every rule with one attempt's result (the worker's only call after an attempt)."""
        now = self._clock()
        kind = attempt.kind
        if self.limits.tokens is not None:
            self.limits.settle(reserved, used, now=now)
        if completion_tokens is not None and kind in _BILLED:
            if self._measured:
                self.mean_completion += 0.05 * (completion_tokens - self.mean_completion)
            else:  # the first answer replaces the guess
                self.mean_completion, self._measured = float(completion_tokens), True
        self.refused += kind is AttemptKind.REFUSED
        if spent_past(attempt, self.max_retry_after):
            return  # the run stops on it: no pause to say, and a daily cap teaches the rate nothing
        if headers:
            self._read_headers(headers, now)
        pushback = kind in PUSHBACK
        self.window.record(now, pushback=pushback, accepted=kind in _BILLED)
        until = self.breaker.record(kind not in FAILURES, now=now)
        if until is not None:
            self.breaker_pauses += 1
            self._pause(until, now, "most recent requests failed")
        adaptive = self.adaptive
        if adaptive is None:
            return
        if adaptive.current_rps is None and self.window.pushback < adaptive.threshold * adaptive.min_samples:
            return  # nothing to lower and nothing to grow: the common case, kept cheap
        attempts, pushed, accepted_rps = self.window.counts(now)
        changed = self.adaptive.observe(now, attempts=attempts, pushback=pushed, accepted_rps=accepted_rps,
                                        peak_rps=self.window.peak_rps(now) if pushed else 0.0,
                                        sent_rps=self.window.sent_rps(now) if pushed else 0.0)
        if changed:
            self.window.forget()
        # the host still takes some: the lower rate is enough; it refuses (nearly) everything: a
        # quota we all share is spent, so everyone waits as long as it says
        if changed and pushback and attempt.retry_after and pushed >= SHARED_PAUSE_SHARE * attempts:
            self.shared_pauses += 1
            wait = min(attempt.retry_after, self.max_retry_after)
            self._pause(now + wait, now, f"{pushed} of the last {attempts} requests were refused")
        self._apply_rate(now)

    def _read_headers(self, headers: Mapping[str, str], now: float) -> None:
        if not isinstance(headers, dict) and "x-ratelimit-remaining-requests" not in headers \
                and "x-ratelimit-remaining-tokens" not in headers:
            return  # aiohttp's headers look up any casing at once; a plain dict is scanned below
        snapshot = read_rate_limit_headers(headers)  # one scan of the keys, any casing
        if snapshot is None:
            return
        self.limits.observe(snapshot.capped(self.max_retry_after), now=now)
        self._engaged = True
        self._report(now, "the host's rate-limit quota is spent")

    def _pause(self, until: float, now: float, why: str) -> None:
        self._engaged = True
        self.limits.pause_until(until)
        self._report(now, why)

    def note_retry(self, seconds: float, why: str | None) -> None:
        """A request waits ``seconds`` before its own retry (a long Retry-After, a backoff).

        Waits of at least `REPORTED_RETRY_S` are said, one line for each that ends later than the
        last one said: a run whose rows all wait for the host then does not look hung.
        """
        if self._on_long_retry is None or seconds < REPORTED_RETRY_S:
            return
        now = self._clock()
        if now + seconds > self._long_retries_until + REPORTED_RETRY_S:
            self._long_retries_until = now + seconds
            self._on_long_retry(seconds, why or "no usable answer")

    def _report(self, now: float, why: str) -> None:
        """Say the pause in force, once: a pause that refusals in flight extend by moments is not news."""
        until = self.limits.paused_until
        if self._on_pause is not None and until - now >= REPORTED_PAUSE_S \
                and until > self._pause_said_until + REPORTED_PAUSE_S:
            self._pause_said_until = until
            self._on_pause(until - now, why)

    def _apply_rate(self, now: float) -> None:
        adaptive = self.adaptive
        rps = adaptive.current_rps if adaptive is not None else None
        per_minute = self._configured_rpm if rps is None else rps * 60.0
        if per_minute is not None and self._configured_rpm:
            per_minute = min(per_minute, self._configured_rpm)
        if per_minute == self._applied:
            return
        self._applied = per_minute
        if per_minute is None:  # the hidden limit went away
            self.limits.requests = None
            return
        self._engaged = True
        if self.limits.requests is None:
            # a first decrease starts with an empty bucket: no burst at the rate that was refused
            self.limits.requests = TokenBucket(per_minute=per_minute, burst_seconds=self._burst_seconds, now=now,
                                              empty=True)
        else:
            lowered = per_minute < self.limits.requests.per_minute
            self.limits.requests.set_rate(per_minute, now=now, empty=lowered)


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile; whether it was set."""
    if not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
    return stop.is_set()
