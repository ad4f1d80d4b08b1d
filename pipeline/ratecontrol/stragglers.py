"""Stragglers: requests that hang while the others answer at normal speed (pure bookkeeping, time passed in).

A request that hangs holds its connection until its timeout (a timed-out call may still be billed,
so it is never cut short). With a fixed pool, a few hangs take most of the pool: 2 % of requests
hanging 10 s at 64 connections leave a fraction of them answering. A request in flight longer than
`multiple` times the recent answered latency (the 90th percentile of the last answers, at least
`floor_s`) is *released*: it stops counting against the pool, so another may start, up to `cap`
released at once. It is released only while the host still answers others at normal speed (an
answer within the last half threshold): when every answer slows down, the host is overloaded, no
request is released, and the adaptive rate handles it.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["StragglerWatch"]

#: a request this many times slower than the recent answers is a straggler
MULTIPLE = 5.0
#: ... and never before this many seconds (answers of a few ms jitter by more than 5x)
FLOOR_S = 0.5
#: answers seen before anything is released
MIN_ANSWERS = 20
#: answers the latency percentile is taken over
WINDOW = 200


class StragglerWatch:
    def __init__(self, *, cap: int, multiple: float = MULTIPLE, floor_s: float = FLOOR_S,
                 min_answers: int = MIN_ANSWERS, window: int = WINDOW) -> None:
        self.cap = cap
        self.multiple = multiple
        self.floor_s = floor_s
        self.min_answers = min_answers
        self._latencies: deque[float] = deque(maxlen=window)
        self._answers = 0
        self._threshold = math.inf
        self._last_normal = -math.inf  # when an answer at normal speed last came back
        self._in_flight: dict[int, float] = {}  # ticket -> when it was sent
        self._released: set[int] = set()
        self._next = 0
        #: requests released so far (for the summary)
        self.released_total = 0

    @property
    def released(self) -> int:
        """Requests in flight that no longer count against the pool."""
        return len(self._released)

    @property
    def threshold(self) -> float:
        """Seconds in flight past which a request is a straggler (inf until enough answers)."""
        return self._threshold

    def start(self, now: float) -> int:
        """A request is sent: its ticket."""
        ticket = self._next
        self._next += 1
        self._in_flight[ticket] = now
        return ticket

    def end(self, ticket: int) -> bool:
        """The request came back (answered or not); whether it had been released."""
        del self._in_flight[ticket]
        if ticket in self._released:
            self._released.discard(ticket)
            return True
        return False

    def note_answer(self, latency: float, now: float) -> None:
        """An HTTP answer came back after ``latency`` seconds (from a request that was not released)."""
        self._latencies.append(latency)
        self._answers += 1
        if self._answers % 10 == 0 or self._answers == self.min_answers:
            self._update()
        if latency * self.multiple <= self._threshold or self._answers < self.min_answers:
            self._last_normal = now

    def due(self, now: float) -> list[int]:
        """Tickets to release now (each released once), oldest first."""
        threshold = self._threshold
        if len(self._released) >= self.cap or threshold == math.inf or now - self._last_normal > threshold / 2:
            return []
        late = [(sent, t) for t, sent in self._in_flight.items() if now - sent > threshold and t not in self._released]
        if not late:
            return []
        late.sort()
        room = self.cap - len(self._released)
        chosen = [t for _, t in late[:room]]
        self._released.update(chosen)
        self.released_total += len(chosen)
        return chosen

    def _update(self) -> None:
        if self._answers < self.min_answers:
            return
        ordered = sorted(self._latencies)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        self._threshold = max(self.floor_s, self.multiple * p90)
