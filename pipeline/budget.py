"""The spending cap (``--max-cost``): money spent plus money in flight never passes it (pure).

Each attempt reserves what it could cost at most (its prompt plus its whole output cap at list
price) before it is sent, and settles to what it was charged when it returns. So however long
the answers, calls in flight can never carry the directory past the cap; near the cap fewer calls
fit at once, and the run stops when not even one more fits.
"""

from __future__ import annotations

__all__ = ["Budget"]


class Budget:
    def __init__(self, cap: float | None, *, spent: float = 0.0) -> None:
        #: dollars the directory may spend in all (None = no cap)
        self.cap = cap
        #: dollars charged so far, earlier runs of the directory included
        self.spent = spent
        #: dollars reserved by attempts in flight
        self.reserved = 0.0

    def reserve(self, usd: float) -> bool:
        """Reserve ``usd`` for one attempt; False when it would not fit under the cap."""
        if self.cap is not None and self.spent + self.reserved + usd > self.cap:
            return False
        self.reserved += usd
        return True

    def settle(self, reserved: float, charged: float) -> None:
        """An attempt returned: release its reservation and add what it was charged."""
        self.reserved = max(0.0, self.reserved - reserved)
        self.spent += charged

    @property
    def exhausted(self) -> bool:
        """Nothing is in flight, so nothing will free room: a refused reservation is final."""
        return self.reserved <= 1e-12
