"""The vllm profile: object-error bodies, no 429 (requests wait for one of max_num_seqs engine
slots), Prometheus /metrics with the running and waiting gauges, the reasoning field switch."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import orjson
import pytest

from pipeline.simulator import Simulator, SimulatorConfig
from tests.simulator.loopback import MODEL, call, messages, serve


def gauges(text: str) -> dict[str, float]:
    pattern = re.compile(r'^(vllm:num_requests_(?:running|waiting))\{model_name="([^"]+)",engine="0"\} (\S+)$')
    found = {}
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            assert match.group(2) == MODEL
            found[match.group(1)] = float(match.group(3))
    return found


def test_errors_have_the_object_error_shape() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, raw = await call(session, sim.chat_url, {"model": "gpt-4o", "messages": messages()})
        data = orjson.loads(raw)
        assert status == 404 and data["object"] == "error" and data["code"] == 404 and "gpt-4o" in data["message"]
        status, _, raw = await call(session, sim.chat_url, {"model": MODEL, "messages": "hi"})
        assert status == 400 and orjson.loads(raw)["type"] == "BadRequestError"

    serve(SimulatorConfig(profile="vllm"), scenario)


def test_usage_has_no_reasoning_breakdown_and_reasoning_content_is_a_switch() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        data = orjson.loads((await call(session, sim.chat_url, {"model": MODEL, "messages": messages()}))[2])
        assert "completion_tokens_details" not in data["usage"] and data["usage"]["prompt_tokens_details"] is None
        assert data["choices"][0]["message"]["reasoning_content"]

    serve(SimulatorConfig(profile="vllm", reasoning_field="reasoning_content"), scenario)


def test_requests_over_max_num_seqs_wait_and_metrics_show_them() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        flood = [asyncio.create_task(call(session, sim.chat_url, {"model": MODEL, "messages": messages(str(i))}))
                 for i in range(6)]
        await asyncio.sleep(0.05)
        async with session.get(sim.root + "/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            assert gauges(await resp.text()) == {"vllm:num_requests_running": 2.0,
                                                 "vllm:num_requests_waiting": 4.0}
        results = await asyncio.gather(*flood)
        assert [status for status, _, _ in results] == [200] * 6
        assert time.monotonic() - started >= 0.3  # three rounds of two
        async with session.get(sim.root + "/metrics") as resp:
            assert gauges(await resp.text()) == {"vllm:num_requests_running": 0.0,
                                                 "vllm:num_requests_waiting": 0.0}
        assert sim.stats.metrics_scrapes == 2 and sim.stats.max_waiting == 4 and 429 not in sim.stats.status_counts

    serve(SimulatorConfig(profile="vllm", max_num_seqs=2, latency_ms=100), scenario)


def test_rpm_limits_are_refused_for_vllm() -> None:
    with pytest.raises(ValueError, match="max_num_seqs"):
        Simulator(SimulatorConfig(profile="vllm", rpm=60))
