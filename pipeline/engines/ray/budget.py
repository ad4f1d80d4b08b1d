"""One spending cap (``--max-cost``) for every process of a cluster run.

The limiter actor holds the run's one `Budget` (`pipeline.ratecontrol.budget`) in a `ClusterBudget`:
each attempt is reserved there before it is sent, and settled there when it returns, exactly as in
one process, so the local guarantee holds for the cluster: the expected costs of every call in
flight fit under the cap, their worst costs under the cap plus 10 %. A process reaches it through a
`RemoteBudget`, which the workers use as they use a `Budget`; settlements travel with the next
reservation (or the next exchange of the shard's helper), so a call costs one round trip, not two.

A process that holds reservations calls at least every `HEARTBEAT_S`; the reservations of one silent
for `SILENT_AFTER_S` (killed with its calls in flight) are released, so they cannot hold the
cluster's room for ever.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pipeline.ratecontrol.budget import Budget

__all__ = ["BudgetAsk", "BudgetReply", "ClusterBudget", "RemoteBudget"]

#: what a reservation came to: sent, wait (calls in flight elsewhere may free room), or spent
GO, WAIT, SPENT = "go", "wait", "spent"
HEARTBEAT_S = 5.0
SILENT_AFTER_S = 30.0


@dataclass(slots=True)
class BudgetAsk:
    #: the asking process (one per shard)
    owner: str = ""
    #: (expected, worst) dollars of the attempt to reserve, or None (only settle)
    reserve: tuple[float, float] | None = None
    #: (expected, worst, charged) of attempts that returned
    settled: list[tuple[float, float, float]] = field(default_factory=list)
    #: charges of attempts whose reservation stays held (an answer still being prepared)
    charged: list[float] = field(default_factory=list)
    #: the most completion tokens an answer of this process was billed (None: none yet)
    longest_completion: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetReply:
    answer: str
    longest_completion: int | None
    spent: float


class ClusterBudget:
    """The run's `Budget`, fed by every process (pure: no IO)."""

    def __init__(self, cap: float | None, *, spent: float = 0.0, silent_after: float = SILENT_AFTER_S) -> None:
        self.budget = Budget(cap, spent=spent)
        self.silent_after = silent_after
        #: each process's reservations not settled, and when it last called
        self._held: dict[str, list[tuple[float, float]]] = {}
        self._seen: dict[str, float] = {}
        #: calls answered; reservations released because their process fell silent
        self.calls = self.released = 0

    def ask(self, request: BudgetAsk, *, now: float = 0.0) -> BudgetReply:
        self.calls += 1
        budget, owner = self.budget, request.owner
        self._seen[owner] = now
        held = self._held.setdefault(owner, [])
        for expected, worst, charged in request.settled:
            with contextlib.suppress(ValueError):
                held.remove((expected, worst))
            budget.settle(expected, worst, charged)
        for charged in request.charged:
            budget.charge(charged)
        if request.longest_completion is not None:
            budget.billed_completion(request.longest_completion)
        self._release_silent(now)
        answer = GO
        if request.reserve is not None:
            if budget.reserve(*request.reserve):
                held.append(request.reserve)
            else:
                answer = SPENT if budget.exhausted else WAIT
        return BudgetReply(answer, budget.longest_completion, budget.spent)

    def _release_silent(self, now: float) -> None:
        for owner, held in self._held.items():
            if held and now - self._seen.get(owner, now) > self.silent_after:
                for expected, worst in held:
                    self.budget.settle(expected, worst, 0.0)
                self.released += len(held)
                held.clear()


class RemoteBudget:
    """What a process's workers see of the cluster's budget: `Budget`'s methods, and `reserve_remote`."""

    def __init__(self, cap: float, ask: Callable[[BudgetAsk], Awaitable[BudgetReply]], *, owner: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self._ask, self.owner, self._clock = ask, owner, clock
        self._last = clock()
        self._pending = BudgetAsk()
        #: attempts of this process reserved and not settled
        self.in_flight = 0
        self.longest_completion: int | None = None

    async def reserve_remote(self, expected: float, worst: float) -> str:
        """Reserve one attempt in the cluster's budget: `GO`, `WAIT` or `SPENT`."""
        reply = await self._send(BudgetAsk(reserve=(expected, worst)))
        if reply.answer == GO:
            self.in_flight += 1
        return reply.answer

    async def flush(self) -> None:
        """Send the settlements not yet sent (and say this process is alive while it holds reservations)."""
        if self._pending.settled or self._pending.charged or self._pending.longest_completion is not None \
                or (self.in_flight and self._clock() - self._last > HEARTBEAT_S):
            await self._send(BudgetAsk())

    async def _send(self, request: BudgetAsk) -> BudgetReply:
        self._last = self._clock()
        request.owner = self.owner
        pending, self._pending = self._pending, BudgetAsk()
        request.settled, request.charged = pending.settled, pending.charged
        request.longest_completion = pending.longest_completion
        try:
            reply = await self._ask(request)
        except BaseException:  # sent with the next call
            self._pending.settled[:0], self._pending.charged[:0] = pending.settled, pending.charged
            self._pending.longest_completion = _most(self._pending.longest_completion, pending.longest_completion)
            raise
        self.longest_completion = _most(self.longest_completion, reply.longest_completion)
        return reply

    # -- as `Budget` ---------------------------------------------------------------------------
    def reserve(self, expected: float, worst: float) -> bool:  # pragma: no cover - the workers call reserve_remote
        raise RuntimeError("a cluster budget is reserved with reserve_remote")

    def worst_completion(self, max_tokens: int) -> int:
        return max(max_tokens, self.longest_completion or 0)

    def billed_completion(self, tokens: int) -> None:
        self.longest_completion = _most(self.longest_completion, tokens)
        self._pending.longest_completion = _most(self._pending.longest_completion, tokens)

    def settle(self, expected: float, worst: float, charged: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self._pending.settled.append((expected, worst, charged))

    def charge(self, charged: float) -> None:
        self._pending.charged.append(charged)

    @property
    def exhausted(self) -> bool:
        return self.in_flight == 0


def _most(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
