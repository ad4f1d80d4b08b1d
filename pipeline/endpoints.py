"""Where requests go: the transport for a config (a real host, or the built-in simulator).

The one place that knows the simulator is started in-process for ``provider = "simulator"``;
everything downstream sees a `Transport`.
"""

from __future__ import annotations

import contextlib
from typing import TextIO

from pipeline.client import AiohttpTransport, Transport
from pipeline.config import RunConfig
from pipeline.providers import DEFAULT_BASE_URLS, chat_url, request_headers

__all__ = ["SIMULATOR_MODEL", "open_transport"]

SIMULATOR_MODEL = "gpt-oss-safeguard-20b-simulator"


async def open_transport(stack: contextlib.AsyncExitStack, config: RunConfig, *, api_key: str | None,
                         transport: Transport | None, stream: TextIO) -> Transport:
    """The transport to use, entered on ``stack`` (a given ``transport`` is used as it is)."""
    base_url = config.base_url or DEFAULT_BASE_URLS.get(config.provider)
    if config.provider == "simulator" and transport is None:
        from pipeline.simulator import SimulatorConfig, start_simulator
        from pipeline.simulator.config import Faults

        sim_config = SimulatorConfig(latency_ms=config.simulator_latency_ms, jitter_ms=config.simulator_jitter_ms,
                                     faults=Faults.transient(config.simulator_fault_rate))
        sim = await stack.enter_async_context(start_simulator(sim_config))
        base_url = sim.base_url
        print(f"moderate: using the built-in SIMULATOR at {base_url} (not a model: verdicts come from a "
              "keyword rule)", file=stream)
    if transport is not None:
        return transport
    return await stack.enter_async_context(AiohttpTransport(
        url=chat_url(base_url or ""), headers=request_headers(config.provider, api_key),
        connections=config.concurrency))
