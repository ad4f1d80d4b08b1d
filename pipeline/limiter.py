"""Pure rate-limit bookkeeping: token buckets for RPM/TPM, server pauses, and an adaptive rate.

Nothing here sleeps or reads a clock: every method takes ``now`` (seconds, any monotonic origin) and
answers with numbers; the async wrapper does the sleeping, and tests drive a simulated clock.
"""

from __future__ import annotations

import math
from collections import deque

from pipeline.retry import RateLimitSnapshot

__all__ = ["AdaptiveRate", "RateLimits", "TokenBucket"]

_EPSILON = 1e-9  # float slack: waiting exactly wait_time() seconds must be enough


class TokenBucket:
    """A continuously refilled bucket: ``per_minute`` units a minute, at most ``capacity`` banked.

    ``capacity = per_minute / 60 * burst_seconds`` (at least 1), so an idle client may send a short
    burst but never more than ``burst_seconds`` worth of quota at once. A cost larger than the
    capacity (one huge prompt under a small TPM) is allowed once the bucket is full and leaves it in
    debt, so it is delayed rather than refused forever, and the average rate still holds.

    >>> bucket = TokenBucket(per_minute=60, now=0.0)
    >>> bucket.take(1, now=0.0); bucket.wait_time(1, now=0.0)
    1.0
    """

    __slots__ = ("_burst_seconds", "_capacity", "_level", "_rate", "_updated")

    def __init__(self, *, per_minute: float, burst_seconds: float = 1.0, now: float) -> None:
        if not burst_seconds > 0:
            raise ValueError(f"burst_seconds must be positive, got {burst_seconds}")
        self._burst_seconds = burst_seconds
        self._updated = now
        self._level = 0.0
        self.set_rate(per_minute, now=now)
        self._level = self._capacity  # starts full: an idle client may burst

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:  # a clock that goes backwards refills nothing
            self._level = min(self._capacity, self._level + elapsed * self._rate)
            self._updated = now

    @property
    def capacity(self) -> float:
        return self._capacity

    def available(self, *, now: float) -> float:
        """Units in the bucket at ``now``; negative while in debt."""
        self._refill(now)
        return self._level

    def wait_time(self, cost: float, *, now: float) -> float:
        """Seconds until ``cost`` can be taken (0.0 = now). Costs above the capacity wait for a full bucket."""
        self._refill(now)
        need = min(cost, self._capacity)
        missing = need - self._level
        if missing <= _EPSILON * max(1.0, need):
            return 0.0
        return missing / self._rate

    def take(self, cost: float, *, now: float) -> None:
        """Take ``cost`` units, going into debt if needed (after a zero ``wait_time``, or to settle)."""
        self._refill(now)
        self._level -= cost

    def refund(self, amount: float, *, now: float) -> None:
        """Give back units reserved but not used; the bucket never holds more than its capacity."""
        self._refill(now)
        self._level = min(self._capacity, self._level + amount)

    def set_rate(self, per_minute: float, *, now: float) -> None:
        """Change the rate from ``now`` on: time before ``now`` refills at the old rate."""
        if not 0 < per_minute < math.inf:
            raise ValueError(f"per_minute must be a positive number, got {per_minute}")
        self._refill(now)
        self._rate = per_minute / 60.0
        self._capacity = max(1.0, self._rate * self._burst_seconds)
        self._level = min(self._level, self._capacity)


class RateLimits:
    """The run's shared request (RPM) and token (TPM) budgets, plus what the server told us.

    ``rpm`` / ``tpm`` of None means unlimited. ``Retry-After`` → :meth:`pause_until`. ``x-ratelimit-*``
    → :meth:`observe`: a spent quota pauses until its reset; a quota under 5 % of its limit spaces
    request starts by ``reset / remaining`` (a token quota counted in mean-sized requests) so what is
    left lasts until the reset. Only ``remaining`` and ``reset`` are used, so it works whatever window
    the host counts in (minute, day).
    """

    LOW_FRACTION = 0.05

    def __init__(self, *, rpm: float | None, tpm: float | None, now: float, burst_seconds: float = 1.0) -> None:
        self.requests = TokenBucket(per_minute=rpm, burst_seconds=burst_seconds, now=now) if rpm else None
        self.tokens = TokenBucket(per_minute=tpm, burst_seconds=burst_seconds, now=now) if tpm else None
        self._paused_until = -math.inf
        self._pace_s = 0.0  # minimum gap between request starts while a server quota runs low
        self._pace_end = -math.inf
        self._last_start = -math.inf
        self._mean_tokens: float | None = None  # moving mean of reserved tokens per request

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def reserve(self, tokens: int, *, now: float) -> float:
        """0.0 when a request of about ``tokens`` tokens may start now (its quota is then taken);
        else the seconds to wait before asking again (nothing taken)."""
        ready = self._paused_until
        if now < self._pace_end:  # a server quota runs low: space the starts
            ready = max(ready, self._last_start + self._pace_s)
        if now < ready:
            return ready - now
        requests, budget = self.requests, self.tokens
        wait = 0.0 if requests is None else requests.wait_time(1, now=now)
        if budget is not None:
            wait = max(wait, budget.wait_time(tokens, now=now))
        if wait > 0.0:
            return wait
        if requests is not None:
            requests.take(1, now=now)
        if budget is not None:
            budget.take(tokens, now=now)
        self._last_start = now
        mean = self._mean_tokens
        self._mean_tokens = float(tokens) if mean is None else mean + 0.05 * (tokens - mean)
        return 0.0

    def settle(self, reserved: int, used: int, *, now: float) -> None:
        """Correct the token budget once the server's usage is known: charge or refund the difference."""
        if self.tokens is not None and used > reserved:
            self.tokens.take(used - reserved, now=now)
        elif self.tokens is not None and used < reserved:
            self.tokens.refund(reserved - used, now=now)

    def pause_until(self, instant: float) -> None:
        """Nobody may reserve before ``instant``; of two pauses the later one holds."""
        if instant > self._paused_until:
            self._paused_until = instant

    def observe(self, snapshot: RateLimitSnapshot, *, now: float) -> None:
        """Act on a response's ``x-ratelimit-*`` headers (see the class docstring)."""
        quotas = (
            (snapshot.limit_requests, snapshot.remaining_requests, snapshot.reset_requests_s, 1.0),
            (snapshot.limit_tokens, snapshot.remaining_tokens, snapshot.reset_tokens_s, self._mean_tokens),
        )
        gap, end, healthy = 0.0, -math.inf, False
        for limit, remaining, reset, per_request in quotas:
            if remaining is None or reset is None:
                continue
            if remaining <= 0:
                self.pause_until(now + reset)
            elif limit and remaining < self.LOW_FRACTION * limit and per_request:
                gap = max(gap, min(reset, reset * per_request / remaining))
                end = max(end, now + reset)
            else:
                healthy = True
        if gap > 0.0:
            self._pace_s = gap
            self._pace_end = end
        elif healthy:  # the window was reset: stop spacing requests
            self._pace_s = 0.0
            self._pace_end = -math.inf


class AdaptiveRate:
    """A request rate for servers that throttle without publishing their limit (a hidden RPM).

    Unlimited (None) until the first throttle, then additive-increase/multiplicative-decrease around
    a remembered ``ceiling``: a throttle sets the ceiling to the rate its request was sent at and the
    rate to ``decrease_factor`` times it (once per ``cooldown_s``); below ``RECOVER_TO`` of the
    ceiling the rate closes half the gap a second, above it it probes slowly (``PROBE_PER_S``,
    ``PROBE_PER_SUCCESS``); past ``FORGET_ABOVE`` times the ceiling the ceiling is forgotten. Never
    above ``RUNAWAY`` times the best observed rate.
    """

    RECOVER_TO = 0.95
    RECOVER_PER_S = 0.5
    PROBE_PER_S = 0.005
    PROBE_PER_SUCCESS = 0.0005
    STARTUP_PER_S = 0.1
    BLIND_START_PER_S = 1.0
    RUNAWAY = 16.0
    FORGET_ABOVE = 1.02

    __slots__ = ("_best_seen", "_ceiling", "_history", "_last_decrease", "_rate", "_startup", "_updated",
                 "cooldown_s", "decrease_factor", "increase_rps", "min_rps")  # fmt: skip

    def __init__(self, *, initial_rps: float | None = None, min_rps: float = 0.5, increase_rps: float = 0.01,
                 decrease_factor: float = 0.5, cooldown_s: float = 1.0) -> None:  # fmt: skip
        if not 0.0 < decrease_factor < 1.0:
            raise ValueError(f"decrease_factor must be in (0, 1), got {decrease_factor}")
        self.min_rps = min_rps
        self.increase_rps = increase_rps
        self.decrease_factor = decrease_factor
        self.cooldown_s = cooldown_s
        self._rate = None if initial_rps is None else max(min_rps, initial_rps)
        self._ceiling: float | None = None
        self._last_decrease = -math.inf
        self._updated: float | None = None
        self._startup = self.STARTUP_PER_S  # growth per second while no ceiling is known
        self._best_seen = 0.0
        # (since, rate) checkpoints: a throttle is judged against the rate its request was sent at.
        self._history: deque[tuple[float, float | None]] = deque(maxlen=600)

    @property
    def current_rps(self) -> float | None:
        """Requests per second to allow now; None = unlimited (no throttle seen yet)."""
        return self._rate

    @property
    def ceiling_rps(self) -> float | None:
        """Where the last throttle happened; None before one, or once the rate passed it safely."""
        return self._ceiling

    def on_throttle(self, now: float, observed_rps: float, *, sent_at: float | None = None) -> bool:
        """A 429 (or another throttle signal) arrived; True when it lowered the rate.

        ``observed_rps``: requests per second sent and *not* throttled over the last few seconds
        (at least ~10 requests' worth), in-flight ones included; ``sent_at``: when the throttled
        request was sent.
        """
        # the server needs a moment to recover from the overload that caused the last decrease
        if (now if sent_at is None else sent_at) < self._last_decrease + self.cooldown_s:
            return False
        observed = observed_rps if observed_rps > 0 and math.isfinite(observed_rps) else None
        rate = self._rate if sent_at is None else self._rate_at(sent_at)
        if rate is None:  # first throttle: what the server let through is all we know
            rate = observed
        self._startup = self.STARTUP_PER_S if rate is not None else self.BLIND_START_PER_S
        self._ceiling = rate
        self._rate = self.min_rps if rate is None else max(self.min_rps, self.decrease_factor * rate)
        self._last_decrease = now
        self._updated = now
        self._history.append((now, self._rate))
        return True

    def _rate_at(self, instant: float) -> float | None:
        """The rate in force at ``instant`` (the latest checkpoint at or before it)."""
        for since, rate in reversed(self._history):
            if since <= instant:
                return rate
        return self._history[0][1] if self._history else self._rate

    def on_success(self, now: float, *, observed_rps: float | None = None) -> None:
        """A request succeeded: raise the rate for the time since the last update.

        At most ~2 requests' worth of time per call: a silence teaches nothing. ``observed_rps`` as
        in on_throttle (successes per second will do here).
        """
        if (rate := self._rate) is None:
            return
        held_until = self._last_decrease + self.cooldown_s  # hold a lowered rate while the server recovers
        dt = min(now - max(now if self._updated is None else self._updated, held_until), max(1.0, 2.0 / rate))
        self._updated = now if self._updated is None else max(self._updated, now)
        if dt <= 0.0:
            return
        if observed_rps is not None and observed_rps > self._best_seen:
            self._best_seen = observed_rps
        ceiling = self._ceiling
        if ceiling is None or rate >= self.FORGET_ABOVE * ceiling:  # no limit known, or it moved up
            self._ceiling = None
            rate += rate * min(1.0, self._startup * dt)
        else:
            target = self.RECOVER_TO * ceiling
            if rate < target:
                rate += (target - rate) * min(1.0, self.RECOVER_PER_S * dt)
            probe = max(self.increase_rps, self.PROBE_PER_S * rate) * dt
            rate += min(probe, self.PROBE_PER_SUCCESS * rate)
        cap = self.RUNAWAY * self._best_seen if self._best_seen > 0 else 1e6
        self._rate = max(self._rate, min(rate, cap, 1e6))  # never lowered here
        rate = self._rate
        if not self._history or now - self._history[-1][0] >= 0.1:  # 600 x 0.1 s: a minute
            self._history.append((now, rate))
