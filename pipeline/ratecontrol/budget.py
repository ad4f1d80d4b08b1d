"""The spending cap (``--max-cost``): what calls in flight could cost is bounded, not guessed (pure).

Each attempt reserves two figures before it is sent: its *expected* cost (its prompt plus the
output length answers have measured so far) and its *worst* cost (its whole output cap). It may go
when the expected costs of everything in flight still fit under the cap, and the worst costs fit
under the cap plus ``slack`` (10 %). So long answers at high effort cannot carry a run far past the
cap however many calls are in flight: near the cap fewer calls go at once, and one call alone may
always go while its expected cost fits. A returning attempt settles to what it was charged.

The worst case is what the host actually bills, not what we asked for: some hosts bill reasoning past
``max_tokens``. So the output reserved is the larger of the cap and the longest completion billed so
far, and until a first answer has shown what the host bills, one call goes at a time.
"""

from __future__ import annotations

__all__ = ["Budget"]


class Budget:
    def __init__(self, cap: float | None, *, spent: float = 0.0, slack: float = 0.1) -> None:
        #: dollars the directory may spend in all (None = no cap)
        self.cap = cap
        #: dollars charged so far, earlier runs of the directory included
        self.spent = spent
        self.slack = slack
        #: expected and worst-case dollars of the attempts in flight
        self.expected = 0.0
        self.worst = 0.0
        self.in_flight = 0
        #: the most completion tokens one answer was billed so far (None: no answer yet)
        self.longest_completion: int | None = None

    def reserve(self, expected: float, worst: float) -> bool:
        """Reserve one attempt; False when it would not fit (see the module docstring)."""
        if self.cap is None:
            return True
        if self.spent + self.expected + expected > self.cap:
            return False
        if self.in_flight and (self.longest_completion is None
                               or self.spent + self.worst + worst > self.cap * (1.0 + self.slack)):
            return False
        self.expected += expected
        self.worst += worst
        self.in_flight += 1
        return True

    def worst_completion(self, max_tokens: int) -> int:
        """Completion tokens to reserve for the worst case of a call capped at ``max_tokens``."""
        return max(max_tokens, self.longest_completion or 0)

    def billed_completion(self, tokens: int) -> None:
        """An answer was billed ``tokens`` completion tokens (reserve at least as many from now on)."""
        if self.longest_completion is None or tokens > self.longest_completion:
            self.longest_completion = tokens

    def settle(self, expected: float, worst: float, charged: float) -> None:
        """An attempt returned: release its reservation and add what it was charged."""
        if self.cap is not None:
            self.expected = max(0.0, self.expected - expected)
            self.worst = max(0.0, self.worst - worst)
            self.in_flight = max(0, self.in_flight - 1)
        self.spent += charged

    def charge(self, charged: float) -> None:
        """Add a charge while the attempt's reservation stays held (its answer is still to be fetched)."""
        self.spent += charged

    @property
    def exhausted(self) -> bool:
        """Nothing is in flight, so nothing will free room: a refused reservation is final."""
        return self.in_flight == 0
