"""Router: which endpoint takes the next request, and which are out of service (fake clock)."""

from __future__ import annotations

import asyncio
import math

from pipeline.call.router import COOLDOWN_S, FAILURES_OUT, Route, Router
from pipeline.core.cost import Pricing
from pipeline.ratecontrol import RateControl

PAID = Pricing(0.075, 0.0375, 0.30)
DEAR = Pricing(0.15, 0.15, 0.60)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def route(name: str, *, concurrency: int = 2, pricing: Pricing = PAID, weight: float = 1.0,
          self_hosted: bool = False) -> Route:
    return Route(name, judge=None, control=RateControl(rpm=None, tpm=None), pricing=pricing,  # type: ignore[arg-type]
                 concurrency=concurrency, weight=weight, self_hosted=self_hosted)


def router(*routes: Route, clock: Clock | None = None) -> tuple[Router, list[str]]:
    said: list[str] = []
    routes_ = Router(list(routes), clock=clock or Clock(), on_change=lambda r, line: said.append(f"{r.name}: {line}"))
    return routes_, said


def test_a_request_goes_to_the_self_hosted_then_the_cheaper_endpoint_and_overflows_when_it_is_full() -> None:
    r, _ = router(route("dear", pricing=DEAR), route("hosted"), route("vllm", self_hosted=True))
    taken = [r.pick().name for _ in range(6)]  # type: ignore[union-attr]
    assert taken == ["vllm", "vllm", "hosted", "hosted", "dear", "dear"]
    assert r.pick() is None


def test_a_higher_weight_wins_over_self_hosted_and_price() -> None:
    r, _ = router(route("vllm", self_hosted=True), route("dear", pricing=DEAR, weight=3))
    assert r.pick().name == "dear"  # type: ignore[union-attr]


def test_a_retried_request_goes_to_another_endpoint_when_one_has_room() -> None:
    r, _ = router(route("a", weight=2), route("b"))
    assert r.pick(avoid="a").name == "b"  # type: ignore[union-attr]
    full_b, _ = router(route("a", weight=2), route("b", concurrency=1))
    full_b.pick(avoid="a")
    assert full_b.pick(avoid="a").name == "a"  # type: ignore[union-attr]


def test_failures_in_a_row_take_an_endpoint_out_then_one_probe_brings_it_back() -> None:
    clock = Clock()
    a, b = route("a", weight=2), route("b")
    r, said = router(a, b, clock=clock)
    for _ in range(FAILURES_OUT):
        r.failed(a, "cannot connect to 127.0.0.1:1")
    assert r.pick().name == "b" and len(said) == 1 and "continuing on b" in said[0]  # type: ignore[union-attr]
    clock.now += COOLDOWN_S + 0.01
    assert r.pick() is a and r.pick() is b  # one probe at a time
    r.failed(a, "cannot connect")  # the probe failed: out again, for twice as long
    r.give_back(a)
    assert a.out_until == clock.now + 2 * COOLDOWN_S
    clock.now += 2 * COOLDOWN_S + 0.01
    assert r.pick() is a
    r.answered(a)
    r.give_back(a)
    assert not a.probing and r.pick() is a and r.pick() is a  # back in service with both connections
    assert said[-1] == "a: answers again: back in service"


def test_the_run_has_endpoints_left_until_every_one_is_retired() -> None:
    a, b = route("a"), route("b")
    r, said = router(a, b)
    assert r.retire(a, "HTTP 401: key rejected") is True
    assert "out of service for the rest of this run; continuing on b" in said[0]
    assert r.pick() is b and r.pick() is b and r.pick() is None
    assert r.retire(b, "HTTP 402: out of credit") is False and a.out_until == math.inf


def test_one_endpoint_is_never_taken_out() -> None:
    a = route("a")
    r, said = router(a)
    for _ in range(FAILURES_OUT * 3):
        r.failed(a, "boom")
    assert r.pick() is a and said == []


def test_a_waiting_request_takes_the_connection_given_back() -> None:
    async def go() -> str:
        a = route("a", concurrency=1)
        r, _ = router(a)
        assert r.pick() is a
        waiting = asyncio.create_task(r.take())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        r.give_back(a)
        taken = await asyncio.wait_for(waiting, 1.0)
        return taken.name if taken else "none"

    assert asyncio.run(go()) == "a"


def test_a_wait_for_a_connection_ends_when_the_run_stops() -> None:
    async def go() -> object:
        a = route("a", concurrency=1)
        r, _ = router(a)
        r.pick()
        stop = asyncio.Event()
        waiting = asyncio.create_task(r.take(stop=stop))
        await asyncio.sleep(0.01)
        stop.set()
        r.wake_all()
        return await asyncio.wait_for(waiting, 1.0)

    assert asyncio.run(go()) is None
