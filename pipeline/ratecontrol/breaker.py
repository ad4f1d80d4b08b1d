"""A circuit breaker over recent attempts (pure bookkeeping, time passed in).

When most recent attempts failed (connection errors, 5xx, timeouts), retrying at full speed only
burns attempts. The breaker opens: the throttle pauses everyone for a cool-down, then lets traffic
probe again. Each re-open without a success in between doubles the cool-down, up to a cap.
"""

from __future__ import annotations

from collections import deque


class CircuitBreaker:
    def __init__(self, *, window: int = 50, min_samples: int = 20, failure_ratio: float = 0.8,
                 cooldown: float = 2.0, max_cooldown: float = 60.0) -> None:
        self._results: deque[bool] = deque(maxlen=window)
        self._failures = 0
        self.min_samples = min_samples
        self.failure_ratio = failure_ratio
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._cooldown = cooldown
        self.open_until = 0.0
        self.opened = 0

    def record(self, ok: bool, *, now: float) -> float | None:
        """Record one attempt; returns the instant to pause until when the breaker opens."""
        if len(self._results) == self._results.maxlen and not self._results[0]:
            self._failures -= 1
        self._results.append(ok)
        if ok:
            self._cooldown = self.base_cooldown
            return None
        self._failures += 1
        if now < self.open_until or len(self._results) < self.min_samples:
            return None
        if self._failures >= self.failure_ratio * len(self._results):
            self.open_until = now + self._cooldown
            self.opened += 1
            self._cooldown = min(self.max_cooldown, self._cooldown * 2)
            self._results.clear()
            self._failures = 0
            return self.open_until
        return None
