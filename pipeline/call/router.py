"""Routing over the endpoints of a run: which host takes the next request, and which are out of service.

Each endpoint (`Route`) has its own judge (transport, body shape, key), rate control, breaker, vLLM
gate, price and number of connections. A request goes to the first endpoint, in preference order,
with a free connection: a higher ``weight`` first, then self-hosted before hosted, then the cheaper,
then the order of the config. An endpoint is taken out of service:

- for a cool-down when it fails several times running or its breaker opens; it is then probed back
  with one request at a time until one is answered (the cool-down doubles while probes fail);
- for the rest of the run when it refuses the run (a bad key, no credit, a wrong URL) or reports its
  quota spent past ``max_retry_after`` (a daily cap).

A request that failed on one endpoint goes to another when one has room. The run stops only when no
endpoint is left. With one endpoint nothing is ever taken out: the run's own rules decide, as they
always did, and `take` returns at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.call.endpoints import Gate
from pipeline.call.judge import Judge
from pipeline.core.cost import Pricing
from pipeline.ratecontrol import Throttle
from pipeline.ratecontrol.decide import LongRefusals
from pipeline.ratecontrol.stragglers import StragglerWatch

__all__ = ["Route", "Router"]

#: failures in a row (no answer between) that take an endpoint out for a cool-down
FAILURES_OUT = 5
COOLDOWN_S = 2.0
MAX_COOLDOWN_S = 60.0


@dataclass(slots=True, eq=False)
class Route:
    """One endpoint of the run and its live state."""

    name: str
    judge: Judge
    control: Throttle
    pricing: Pricing
    concurrency: int
    gate: Gate | None = None
    #: prompt tokens served from cache count toward the host's TPM (not on Groq)
    cached_count_toward_tpm: bool = True
    weight: float = 1.0
    self_hosted: bool = False
    watch: StragglerWatch | None = None
    long_refusals: LongRefusals = field(default_factory=LongRefusals)
    #: requests counted against ``concurrency`` (released stragglers are not)
    busy: int = 0
    #: out of service until then (inf: for the rest of the run)
    out_until: float = 0.0
    out_reason: str | None = None
    #: back from a cool-down: one request at a time until one is answered
    probing: bool = False
    failures_in_row: int = 0
    cooldown: float = COOLDOWN_S
    # what it served, for the summary
    attempts: int = 0
    answers: int = 0

    def rank(self) -> tuple[float, bool, float]:
        p = self.pricing
        return (-self.weight, not self.self_hosted, p.input_per_million + p.output_per_million)

    def paused_until(self) -> float:
        """When the rate control lets requests go again (a breaker or a host's pause), 0 when it does."""
        limits = getattr(self.control, "limits", None)
        return getattr(limits, "paused_until", 0.0) if limits is not None else 0.0


class Router:
    def __init__(self, routes: list[Route], *, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[Route, str], None] | None = None) -> None:
        self.routes = sorted(routes, key=Route.rank)  # stable: the config's order among equals
        self.single = len(routes) == 1
        self._clock = clock
        self._on_change = on_change
        self._waiters: deque[asyncio.Future[None]] = deque()

    # -- choosing ------------------------------------------------------------------------------
    def pick(self, avoid: str | None = None) -> Route | None:
        """The endpoint the next request should take now (None: none has room), another than the one named
        ``avoid`` when one has room; takes its connection."""
        routes = self.routes
        if self.single:
            route = routes[0]
            if route.busy < route.concurrency:
                route.busy += 1
                return route
            return None
        now = self._clock()
        best = fallback = None
        for route in routes:
            if route.out_until > now:
                continue
            if route.busy >= (1 if route.probing else route.concurrency):
                continue
            if route.name == avoid or route.paused_until() > now:
                fallback = fallback or route  # used when nothing else has room
                continue
            best = route
            break
        chosen = best or fallback
        if chosen is not None:
            chosen.busy += 1
        return chosen

    async def take(self, avoid: str | None = None, *, stop: asyncio.Event | None = None) -> Route | None:
        """Wait for a connection on an endpoint in service; None when the run stops or none is left."""
        while True:
            route = self.pick(avoid)
            if route is not None:
                return route
            if (stop is not None and stop.is_set()) or not self.any_left():
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            wait = self._next_change()
            try:
                async with asyncio.timeout(None if wait == math.inf else max(wait, 0.01)):
                    await waiter
            except TimeoutError:
                pass
            finally:
                if not waiter.done():
                    waiter.cancel()

    def give_back(self, route: Route) -> None:
        """A request's connection is free again (its answer came, or it turned straggler)."""
        route.busy -= 1
        self._wake(1)

    def wake_all(self) -> None:
        """Waiters look again (the run stops, an endpoint changed)."""
        self._wake(len(self._waiters))

    def _wake(self, n: int) -> None:
        waiters = self._waiters
        while n > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    def _next_change(self) -> float:
        """Seconds until an endpoint out for a cool-down may be probed (inf: none is)."""
        now = self._clock()
        ends = [r.out_until - now for r in self.routes if now < r.out_until < math.inf]
        return min(ends, default=math.inf)

    # -- service -------------------------------------------------------------------------------
    def any_left(self) -> bool:
        return any(r.out_until < math.inf for r in self.routes)

    def others_left(self, route: Route) -> bool:
        return any(r.out_until < math.inf for r in self.routes if r is not route)

    def answered(self, route: Route) -> None:
        """An attempt on ``route`` got an answer the host billed (or a refusal: it is alive)."""
        route.attempts += 1
        route.answers += 1
        route.failures_in_row = 0
        if route.probing:
            route.probing = False
            route.cooldown = COOLDOWN_S
            self._said(route, "answers again: back in service")
            self.wake_all()

    def failed(self, route: Route, why: str | None) -> None:
        """An attempt on ``route`` failed (no answer, an error, a timeout)."""
        route.attempts += 1
        route.failures_in_row += 1
        if self.single:
            return
        now = self._clock()
        breaker = route.paused_until()
        if route.probing or route.failures_in_row >= FAILURES_OUT or breaker > now:
            until = max(now + route.cooldown, breaker)
            route.cooldown = min(MAX_COOLDOWN_S, route.cooldown * 2)
            route.probing = True
            route.failures_in_row = 0
            if route.out_until <= now:
                self._out(route, until, f"{why or 'no answer'}: out of service for {until - now:.0f} s, then "
                                        "probed")

    def retire(self, route: Route, reason: str) -> bool:
        """Take ``route`` out for the rest of the run; whether another endpoint is left."""
        if route.out_until < math.inf:
            self._out(route, math.inf, f"{reason}: out of service for the rest of this run")
        return self.any_left()

    def _out(self, route: Route, until: float, line: str) -> None:
        route.out_until, route.out_reason = until, line
        left = [r.name for r in self.routes if r is not route and r.out_until < math.inf]
        self._said(route, line + (f"; continuing on {', '.join(left)}" if left else ""))
        self.wake_all()

    def _said(self, route: Route, line: str) -> None:
        if self._on_change is not None:
            self._on_change(route, line)
