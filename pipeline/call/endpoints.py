"""Where requests go: the transport for a config (a real host, or the built-in simulator).

The one place that knows the simulator is started in-process for ``provider = "simulator"``;
everything downstream sees a `Transport`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol, TextIO

from pipeline.call.client import AiohttpTransport, Transport
from pipeline.config.providers import DEFAULT_BASE_URLS, HOSTS, SIMULATOR_MODEL, chat_url, request_headers
from pipeline.config.settings import RunConfig

__all__ = ["SIMULATOR_MODEL", "Endpoint", "Gate", "open_endpoint"]


class Gate(Protocol):
    """Admission to the server beyond our own limits (vLLM's waiting queue)."""

    async def wait_for_slot(self) -> None: ...

    def release(self) -> None: ...


@dataclass(slots=True)
class Endpoint:
    transport: Transport
    base_url: str
    #: holds vLLM's waiting queue near a target; None when the host is not vLLM
    gate: Gate | None = None


async def open_endpoint(stack: contextlib.AsyncExitStack, config: RunConfig, *, api_key: str | None,
                        transport: Transport | None, stream: TextIO) -> Endpoint:
    """The transport (and vLLM gate) to use, entered on ``stack``; a given ``transport`` is used as it is."""
    base_url = config.base_url or DEFAULT_BASE_URLS.get(config.provider)
    if config.provider == "simulator" and transport is None:
        from pipeline.simulator import SimulatorConfig, start_simulator
        from pipeline.simulator.config import Faults

        sim_config = SimulatorConfig(latency_ms=config.simulator_latency_ms, jitter_ms=config.simulator_jitter_ms,
                                     faults=Faults.transient(config.simulator_fault_rate),
                                     answer_templates=[(p, v, s) for p, v, s in config.simulator_answer_templates])
        sim = await stack.enter_async_context(start_simulator(sim_config))
        base_url = sim.base_url
        print(f"moderate: using the built-in SIMULATOR at {base_url} (not a model: verdicts come from a "
              "keyword rule)", file=stream)
    base_url = base_url or ""
    if transport is None:
        transport = await stack.enter_async_context(AiohttpTransport(
            url=chat_url(base_url), headers=request_headers(config.provider, api_key),
            connections=config.concurrency))
    gate = None
    if HOSTS[config.provider].prometheus_metrics and config.vllm_backpressure and base_url:
        from pipeline.call.vllm_metrics import VllmBackpressure, metrics_url

        backpressure = await stack.enter_async_context(
            VllmBackpressure(metrics_url(base_url), max_limit=config.concurrency))
        gate = backpressure if backpressure.active else None  # not vLLM: no gate
    return Endpoint(transport, base_url, gate)
