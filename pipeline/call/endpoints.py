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
from pipeline.config.settings import EndpointSpec, RunConfig

__all__ = ["SIMULATOR_MODEL", "Endpoint", "Gate", "open_endpoint", "open_endpoints", "straggler_cap"]

#: released stragglers an endpoint may have in flight per connection, unless ``limits.stragglers`` says
STRAGGLERS_PER_CONNECTION = 8


def straggler_cap(stragglers: int | None, *, concurrency: int, queue: int | None) -> int:
    """Stragglers that may stop counting against an endpoint's pool: ``limits.stragglers``, or eight per
    connection; none for a host with a request queue of its own (it counts every request we hold open).

    >>> straggler_cap(None, concurrency=64, queue=None), straggler_cap(None, concurrency=5, queue=5)
    (512, 0)
    """
    if stragglers is not None:
        return stragglers
    return 0 if queue else STRAGGLERS_PER_CONNECTION * concurrency


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
    #: the endpoint's name in labels and reports (the provider's for the one [endpoint])
    name: str = ""
    #: released stragglers it may have in flight beyond its connections
    stragglers: int = 0
    #: what [[endpoints]] said of it (None for the one [endpoint])
    spec: EndpointSpec | None = None


async def open_endpoint(stack: contextlib.AsyncExitStack, config: RunConfig, *, api_key: str | None,
                        transport: Transport | None, stream: TextIO) -> Endpoint:
    """The transport (and vLLM gate) to use, entered on ``stack``; a given ``transport`` is used as it is."""
    stragglers = straggler_cap(config.stragglers, concurrency=config.concurrency,
                               queue=config.queue or _account_queue(config.provider))
    endpoint = await _open(stack, config, provider=config.provider, base_url=config.base_url, api_key=api_key,
                           concurrency=config.concurrency, stragglers=stragglers, transport=transport, stream=stream)
    endpoint.name = config.provider
    return endpoint


async def open_endpoints(stack: contextlib.AsyncExitStack, config: RunConfig, *, api_keys: dict[str, str | None],
                         transport: Transport | None, stream: TextIO) -> list[Endpoint]:
    """Every endpoint of a run with ``[[endpoints]]`` (a given ``transport`` serves them all: tests)."""
    opened = []
    for spec in config.endpoints:
        concurrency = spec.concurrency or 1
        stragglers = straggler_cap(config.stragglers, concurrency=concurrency,
                                   queue=spec.queue or _account_queue(spec.provider))
        endpoint = await _open(stack, config, provider=spec.provider, base_url=spec.base_url,
                               api_key=api_keys.get(spec.name), concurrency=concurrency, stragglers=stragglers,
                               transport=transport, stream=stream)
        endpoint.name, endpoint.spec = spec.name, spec
        opened.append(endpoint)
    return opened


def _account_queue(provider: str) -> int | None:
    """A host that counts every open request against an account queue (ModelsLab: 5 at the least)."""
    return HOSTS[provider].concurrency if provider == "modelslab" else None


async def _open(stack: contextlib.AsyncExitStack, config: RunConfig, *, provider: str, base_url: str | None,
                api_key: str | None, concurrency: int, stragglers: int, transport: Transport | None,
                stream: TextIO) -> Endpoint:
    base_url = base_url or DEFAULT_BASE_URLS.get(provider)
    if provider == "simulator" and transport is None:
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
        # released stragglers keep their connection until they end: room for them beside the pool's
        transport = await stack.enter_async_context(AiohttpTransport(
            url=chat_url(base_url), headers=request_headers(provider, api_key),
            connections=concurrency + stragglers))
    gate = None
    if HOSTS[provider].prometheus_metrics and config.vllm_backpressure and base_url:
        from pipeline.call.vllm_metrics import VllmBackpressure, metrics_url

        backpressure = await stack.enter_async_context(
            VllmBackpressure(metrics_url(base_url), max_limit=concurrency))
        gate = backpressure if backpressure.active else None  # not vLLM: no gate
    return Endpoint(transport, base_url, gate, stragglers=stragglers)
