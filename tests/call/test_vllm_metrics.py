from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from support import serve_app

from pipeline.call.vllm_metrics import (
    RUNNING,
    WAITING,
    BackpressureController,
    VllmBackpressure,
    metrics_url,
    parse_metrics,
)

VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="openai/gpt-oss-safeguard-20b"} 12.0
vllm:num_requests_running{engine="1",model_name="openai/gpt-oss-safeguard-20b"} 8.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="a} b \\"quoted\\" 9"} 5.0 1700000000000
vllm:num_requests_waiting_by_reason{reason="capacity"} 99.0
vllm:gpu_cache_usage_perc{engine="0"} 0.5
"""


# ---- parser --------------------------------------------------------------------------------------


def test_parser_sums_every_labelled_sample_of_the_gauges() -> None:
    assert parse_metrics(VLLM_TEXT) == {RUNNING: 20.0, WAITING: 5.0}


def test_parser_ignores_other_names_comments_and_junk() -> None:
    text = "garbage line\nvllm:num_requests_waiting NaN\nvllm:num_requests_waiting abc\n# vllm:num_requests_running 3\n"
    assert parse_metrics(text) == {}
    assert parse_metrics("vllm:num_requests_waiting 2\n") == {WAITING: 2.0}


def test_metrics_live_at_the_server_root() -> None:
    assert metrics_url("http://10.0.0.5:8000/v1/") == "http://10.0.0.5:8000/metrics"


# ---- controller (fake clock) ---------------------------------------------------------------------


def test_a_queue_over_target_cuts_the_limit_once_per_cooldown() -> None:
    c = BackpressureController(max_limit=64, level=64, target_waiting=4, factor=0.5, cooldown=2.0)
    assert c.observe(waiting=40, in_flight=64, now=10.0) == 32
    assert c.observe(waiting=40, in_flight=64, now=11.0) == 32  # inside the cooldown
    assert c.observe(waiting=30, in_flight=32, now=12.0) == 16
    assert c.observe(waiting=30, in_flight=16, now=14.0) == 8


def test_a_small_excess_is_taken_back_without_a_full_cut() -> None:
    c = BackpressureController(max_limit=64, level=30, target_waiting=4, factor=0.5, cooldown=0)
    assert c.observe(waiting=6, in_flight=30, now=0.0) == 28  # 2 over target: 2 fewer


def test_the_limit_never_drops_below_min_limit() -> None:
    c = BackpressureController(max_limit=8, min_limit=2, factor=0.1, cooldown=0)
    for t in range(5):
        c.observe(waiting=100, in_flight=8, now=float(t))
    assert c.limit == 2


def test_a_fresh_limit_starts_small_and_grows_by_half_until_the_queue_first_passes_the_target() -> None:
    c = BackpressureController(max_limit=256, target_waiting=4)
    assert c.limit == 8
    assert [c.observe(waiting=0, in_flight=c.limit, now=float(t)) for t in range(5)] == [12, 18, 27, 40, 60]
    c.observe(waiting=10, in_flight=60, now=5.0)  # past the target: cut, then grow additively
    assert c.limit == 54
    assert c.observe(waiting=0, in_flight=54, now=6.0) == 55


def test_a_short_queue_grows_the_limit_while_it_is_used_up_to_max() -> None:
    c = BackpressureController(max_limit=12, level=8, target_waiting=4, last_decrease=-100.0)
    assert c.observe(waiting=4, in_flight=8, now=0.0) == 9
    assert c.observe(waiting=0, in_flight=9, now=1.0) == 10
    for t in range(10):
        c.observe(waiting=0, in_flight=c.limit, now=2.0 + t)
    assert c.limit == 12


def test_an_unused_limit_does_not_grow() -> None:
    c = BackpressureController(max_limit=64, level=10)
    assert c.observe(waiting=0, in_flight=3, now=0.0) == 10


def test_the_queue_settles_near_the_target_against_a_model_server() -> None:
    """A server that runs at most 24 requests and queues the rest: in flight settles near 24 + target."""
    c = BackpressureController(max_limit=128, target_waiting=4, cooldown=2.0)
    waiting_seen = []
    for second in range(200):
        in_flight = c.limit  # a busy client always fills the limit
        waiting = max(in_flight - 24, 0)
        c.observe(waiting=waiting, in_flight=in_flight, now=float(second))
        waiting_seen.append(waiting)
    assert max(waiting_seen[-50:]) <= 8
    assert 24 <= c.limit <= 29


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        BackpressureController(max_limit=4, min_limit=5)


# ---- poller over loopback ------------------------------------------------------------------------


class FakeVllm:
    """A tiny server on 127.0.0.1 that serves vLLM-shaped /metrics with gauges the test sets."""

    def __init__(self, *, status: int = 200) -> None:
        self.waiting = 0.0
        self.running = 0.0
        self.status = status
        self.scrapes = 0
        self.user_agent = ""

    async def metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        self.user_agent = request.headers.get("User-Agent", "")
        text = (f'vllm:num_requests_running{{engine="0"}} {self.running}\n'
                f'vllm:num_requests_waiting{{engine="0"}} {self.waiting}\n')
        return web.Response(status=self.status, text=text if self.status == 200 else "not found")

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        async with serve_app(app) as root:
            yield root + "/v1"


def test_poller_lowers_the_limit_when_vllm_queues_and_gates_requests() -> None:
    async def main() -> None:
        server = FakeVllm()
        clock = [0.0]
        async with server.serve() as base_url:
            controller = BackpressureController(max_limit=4, factor=0.5, cooldown=0)
            async with VllmBackpressure(metrics_url(base_url), max_limit=4, controller=controller,
                                        interval=3600, clock=lambda: clock[0]) as gate:
                assert gate.active and gate.limit == 4
                assert server.user_agent.startswith("moderate/")
                for _ in range(4):
                    await gate.wait_for_slot()
                server.waiting, server.running = 50, 4
                assert await gate.poll_once()
                assert gate.limit == 2 and gate.in_flight == 4
                fifth = asyncio.create_task(gate.wait_for_slot())
                await asyncio.sleep(0.01)
                assert not fifth.done()  # 4 in flight, limit 2
                gate.release()
                gate.release()
                gate.release()  # 1 in flight now: room for one more
                await asyncio.wait_for(fifth, 1)
                assert gate.in_flight == 2
                server.waiting = 0
                clock[0] = 1.0
                await gate.poll_once()  # a used-up limit grows again
                assert gate.limit == 3

    asyncio.run(main())


def test_poller_scrapes_on_its_own_timer() -> None:
    async def main() -> None:
        server = FakeVllm()
        async with server.serve() as base_url:
            async with VllmBackpressure(metrics_url(base_url), max_limit=4, interval=0.01):
                for _ in range(200):
                    if server.scrapes >= 3:
                        break
                    await asyncio.sleep(0.01)
            scrapes = server.scrapes
            await asyncio.sleep(0.05)
            assert scrapes >= 3 and server.scrapes == scrapes  # the timer stops with the gate

    asyncio.run(main())


def test_a_server_without_vllm_metrics_leaves_the_gate_open() -> None:
    async def main() -> None:
        server = FakeVllm(status=404)
        async with server.serve() as base_url:
            async with VllmBackpressure(metrics_url(base_url), max_limit=3, interval=0.01) as gate:
                assert not gate.active and gate.limit == 3
                for _ in range(3):
                    await asyncio.wait_for(gate.wait_for_slot(), 1)
                await asyncio.sleep(0.05)
            assert server.scrapes == 1  # no timer for a server that has no gauges

    asyncio.run(main())


def test_a_failed_scrape_keeps_the_last_limit() -> None:
    async def main() -> None:
        server = FakeVllm()
        async with server.serve() as base_url:
            controller = BackpressureController(max_limit=8, factor=0.5, cooldown=0)
            async with VllmBackpressure(metrics_url(base_url), max_limit=8, controller=controller,
                                        interval=3600) as gate:
                server.waiting = 40
                await gate.poll_once()
                assert gate.limit == 4
                server.status = 500
                assert not await gate.poll_once()
                assert gate.limit == 4 and gate.scrape_errors == 1

    asyncio.run(main())
