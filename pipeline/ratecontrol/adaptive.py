"""An adaptive request rate for hosts that push back without publishing a limit (pure, time passed in).

A single 429 says little: busy upstreams, full queues and shared gateways refuse a few requests at
random, and each refused request simply waits for its own retry. Only a *share* of pushback
(refusals and timeouts) over a recent window is evidence of a limit all requests share:

- **Decrease** when at least ``threshold`` of the last ``min_samples`` attempts were pushed back
  (at most once per ``window_s`` and per fresh set of samples), to ``keep`` times the rate the host
  accepted over the last ``window_s`` seconds (never below ``min_rps``): the host told us what it
  takes, in its best second lately (`LoadWindow.peak_rps`) or on average, whichever is more. A
  decrease from a rate already held lowers it by ``keep`` at least.
  5 % random refusals reach 25 % of 50 attempts about once in ten million windows.
- **Recover** additively: ``recover`` of that accepted rate per second, so the rate climbs back
  to the limit in a few seconds and probes past it slowly; once well past the last limit (the
  limit moved up), grow 10 % a second, and forget the limit entirely past ``RUNAWAY`` times it.
- **Undo** decreases that did not help. Against a limit, the host accepts as much after a
  decrease as before (its limit), and the share refused falls. A busy upstream refusing 30 % at
  random accepts 70 % of whatever we send: two decreases on, what it accepts fell with our rate
  (to ``FELL`` or less) and the share neither fell much (``UNMOVED``) nor rose (``ROSE``: a share
  that rises while we lower is a host whose limit moved down). Then the rate goes back to what it
  was before those decreases and that share becomes background: later decreases need
  ``threshold`` more than it. Without this, each window would lower the rate again (0.9 x the 70 %
  accepted, then 0.9 x 70 % of that...) to the floor. Decreases in a row are compared two apart,
  not with the first of the streak (from unlimited, nearly everything is refused: no later share
  compares with it), and stay in a row for ``STREAK_WINDOWS`` windows of time *and* of attempts
  (at 5 requests a second a window of attempts takes 10 s). The first full window after an undo
  checks it: a share up by ``ROSE`` at the rate restored grew with our rate, so it was no
  background after all.

`LoadWindow` counts the attempts; `AdaptiveRate` holds the rate (None = unlimited).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["AdaptiveRate", "LoadWindow"]


class LoadWindow:
    """The last ``size`` attempts (pushed back or not) and answers accepted per second over ``span`` s.

    Shares are taken over a count of attempts, not a time: at 5 requests a second and at 5,000 the
    same number of samples stands behind a decision, so random refusals never look like a limit.
    """

    WIDTH = 0.25
    PEAK_SECONDS = 10

    def __init__(self, size: int = 50, span: float = 2.0) -> None:
        self.size = size
        self._recent: deque[bool] = deque(maxlen=size)
        self._pushback = 0
        self.buckets = max(1, round(span / self.WIDTH))
        self.span = self.buckets * self.WIDTH
        self._accepted = [0] * self.buckets
        self._sent = [0] * self.buckets
        self._refused = [0] * self.buckets  # pushback per quarter second
        self._slot = 0
        self._first: float | None = None
        self._first_sent: float | None = None
        self._seconds = [0] * self.PEAK_SECONDS  # accepted per whole second, for the peak
        self._second = 0
        self._sends = self._results = 0
        self._skip = 0  # results still to come of attempts sent before the last `forget`

    def record(self, now: float, *, pushback: bool, accepted: bool) -> None:
        self._results += 1
        if self._skip:  # sent before the last decision: says nothing about the rate decided then
            self._skip -= 1
        else:
            recent = self._recent
            if len(recent) == self.size:
                self._pushback -= recent[0]
            recent.append(pushback)
            self._pushback += pushback
        if pushback:
            self._advance(now)
            self._refused[int(now / self.WIDTH) % self.buckets] += 1
        if accepted:
            self._advance(now)
            if self._first is None:
                self._first = now
            self._accepted[int(now / self.WIDTH) % self.buckets] += 1
            self._seconds[int(now) % self.PEAK_SECONDS] += 1

    @property
    def pushback(self) -> int:
        """Pushed back among the last ``size`` attempts."""
        return self._pushback

    def record_send(self, now: float) -> None:
        """An attempt left (the rate at which we send is half of what a refusal share means)."""
        self._sends += 1
        self._advance(now)
        if self._first_sent is None:
            self._first_sent = now
        self._sent[int(now / self.WIDTH) % self.buckets] += 1

    def sent_rps(self, now: float) -> float:
        """Attempts sent per second over the window, less those pushed back: what the host took."""
        self._advance(now)
        if self._first_sent is None:
            return 0.0
        return max(0, sum(self._sent) - sum(self._refused)) / min(self.span, max(now - self._first_sent, self.WIDTH))

    def counts(self, now: float) -> tuple[int, int, float]:
        """(attempts, pushed back) among the last ``size`` attempts, and accepted answers per second."""
        self._advance(now)
        if self._first is None:
            return len(self._recent), self._pushback, 0.0
        span = min(self.span, max(now - self._first, self.WIDTH))
        return len(self._recent), self._pushback, sum(self._accepted) / span

    def peak_rps(self, now: float) -> float:
        """The most answers accepted in one whole second over the last ten seconds."""
        self._advance(now)
        current = int(now) % self.PEAK_SECONDS
        return float(max((n for i, n in enumerate(self._seconds) if i != current), default=0))

    def forget(self) -> None:
        """Start counting shares afresh (after a decision based on them), from the attempts sent
        from now on: the results of those already on their way are left out (with answers taking
        seconds, they would otherwise judge the new rate by the old one)."""
        self._recent.clear()
        self._pushback = 0
        self._skip = max(0, self._sends - self._results)

    def _advance(self, now: float) -> None:
        slot = int(now / self.WIDTH)
        if slot <= self._slot:
            return
        for s in range(max(self._slot + 1, slot - self.buckets + 1), slot + 1):
            i = s % self.buckets
            self._accepted[i] = self._sent[i] = self._refused[i] = 0
        self._slot = slot
        second = int(now)
        for s in range(max(self._second + 1, second - self.PEAK_SECONDS + 1), second + 1):
            self._seconds[s % self.PEAK_SECONDS] = 0
        self._second = max(self._second, second)


@dataclass(slots=True)
class _Decrease:
    """One decrease of a streak: the share and accepted rate that caused it, the rate and limit before it."""

    share: float
    accepted_rps: float
    rate: float | None
    limit: float | None


class AdaptiveRate:
    """Requests per second to allow, from the share of pushback (see the module docstring)."""

    RUNAWAY = 16.0
    PAST_LIMIT = 1.1
    GROWTH_PAST_LIMIT = 0.1
    #: a decrease after which, two decreases on, the accepted rate fell to this much of what it was,
    #: while the share of pushback stayed at least ``UNMOVED`` of what it was and rose by less than
    #: ``ROSE``, did not help (see "Undo")
    FELL = 0.85
    UNMOVED = 0.5
    ROSE = 0.1
    #: a decrease this many windows (of time, and of ``min_samples`` attempts) after the last one
    #: starts a new streak
    STREAK_WINDOWS = 3
    #: shares of pushback from this one up are never background noise: the host refuses half or more of
    #: what it gets, and lowering is all that is left to try
    MAX_BACKGROUND = 0.5

    def __init__(self, *, threshold: float = 0.25, min_samples: int = 50, window_s: float = 2.0,
                 keep: float = 0.9, recover: float = 0.02, min_rps: float = 0.2) -> None:
        if not 0.0 < threshold <= 1.0 or not 0.0 < keep < 1.0:
            raise ValueError("threshold must be in (0, 1] and keep in (0, 1)")
        self.threshold = threshold
        self.min_samples = min_samples
        self.window_s = window_s
        self.keep = keep
        self.recover = recover
        self.min_rps = min_rps
        self._rate: float | None = None
        self._limit: float | None = None  # accepted rate at the last decrease
        self._last_decrease = -math.inf
        self._updated: float | None = None
        #: share of pushback the host shows whatever our rate (see "Undo")
        self.background = 0.0
        self._checking = False  # the background was just set: the next full window checks it
        #: the decreases in a row so far (to undo them), and results seen since the last one
        self._streak: list[_Decrease] = []
        self._results = 0
        self.decreases = 0
        self.undone = 0

    @property
    def current_rps(self) -> float | None:
        """The rate to hold now; None = unlimited (no limit seen, or it went away)."""
        return self._rate

    @property
    def limit_rps(self) -> float | None:
        """What the host accepted when it last pushed back."""
        return self._limit

    def observe(self, now: float, *, attempts: int, pushback: int, accepted_rps: float,
                peak_rps: float = 0.0, sent_rps: float = 0.0) -> bool:
        """Counts of the recent window after an attempt; True when the rate changed (lowered, or
        a decrease undone): the caller then counts shares afresh (`LoadWindow.forget`).

        ``peak_rps`` (the most the host accepted in one second lately) counts as accepted too: a
        host that refuses half of what exceeds its limit shows its limit in its best second, not
        in its average; and at the end of a run, when only retries are left, few answers are
        accepted because little is asked, not because the host refuses.

        ``sent_rps`` (what we sent lately, less what was pushed back) also counts as accepted:
        refusals come back at once, accepted answers only after the model's latency, so early on
        the answers counted so far under-state what the host takes.
        """
        self._results += 1
        if self._checking and attempts >= self.min_samples:
            # the first full window since the background was set: refusals that grew with our rate
            # are a limit's, not background
            self._checking = False
            if pushback >= (self.background + self.ROSE) * attempts:
                self.background = 0.0
        pushed = attempts > 0 and pushback >= (self.threshold + self.background) * attempts
        self._grow(now)
        if attempts < self.min_samples or not pushed:
            return False
        if now < self._last_decrease + self.window_s:
            return False  # once per window: the window still holds the pushback that lowered it
        share = pushback / attempts
        measured = accepted_rps if math.isfinite(accepted_rps) and accepted_rps > 0 else 0.0
        if math.isfinite(sent_rps):
            measured = max(measured, sent_rps)  # what the host takes now (the peak is ten seconds old)
        if self._results > self.STREAK_WINDOWS * self.min_samples \
                and now > self._last_decrease + self.STREAK_WINDOWS * self.window_s:
            self._streak.clear()
        self._results = 0
        base = self._noise(share, measured)
        if base is not None:
            self.background, self._checking = share, True
            self._rate, self._limit = base.rate, base.limit
            self._streak.clear()
            self._last_decrease = self._updated = now
            self.undone += 1
            return True
        before = self._rate
        accepted = max(measured, peak_rps if math.isfinite(peak_rps) else 0.0)
        target = max(self.min_rps, self.keep * accepted)
        # pushback at the rate we hold: lower it by ``keep`` at least, whatever the estimate of
        # what the host accepts says (it runs high while answers are on their way)
        self._rate = target if before is None else max(self.min_rps, min(target, self.keep * before))
        if accepted == 0.0 and peak_rps == 0.0 and self._rate > self.min_rps:
            self._rate = self.min_rps
        self._streak.append(_Decrease(share, measured, before, self._limit))
        self._limit = max(accepted, self.min_rps)
        self._last_decrease = now
        self._updated = now
        self.decreases += 1
        return True

    def _noise(self, share: float, accepted_rps: float) -> _Decrease | None:
        """The decrease to undo back to when the refusals do not come from our rate, else None.

        Judged against the decrease two before this one (or the streak's first): what the host
        accepts fell with our rate since, and the share refused stayed about the same. A share that
        rose is a host taking less than it did (its limit moved down), not background.
        """
        streak = self._streak
        if not streak:
            return None
        base = streak[max(0, len(streak) - 2)]
        if share >= self.MAX_BACKGROUND or not self.UNMOVED * base.share <= share < base.share + self.ROSE:
            return None
        return base if accepted_rps <= self.FELL * base.accepted_rps else None

    def _grow(self, now: float) -> None:
        rate, limit = self._rate, self._limit
        if rate is None or limit is None:
            return
        updated = self._updated if self._updated is not None else now
        dt = now - max(updated, self._last_decrease + self.window_s)  # hold the lowered rate one window
        if dt <= 0.0:
            return
        self._updated = now
        dt = min(dt, 5.0)  # a silence teaches nothing
        if rate < self.PAST_LIMIT * limit:
            rate += self.recover * limit * dt
        else:  # well past the last limit without pushback: the limit moved
            rate *= 1.0 + self.GROWTH_PAST_LIMIT * dt
        if rate >= self.RUNAWAY * limit:
            self._rate = self._limit = None
            self._streak.clear()
            return
        self._rate = rate
