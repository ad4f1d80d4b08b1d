"""Everything that imports Ray: the connection, the limiter actor, the labelling dataset.

The shards left to label become a Ray dataset of shard numbers; `map_batches` hands them, one at a
time, to a pool of `ShardLabeller` actors (each with its own event loop and connection pool), and
the driver streams their `ShardSummary` back. The limiter is one named actor per run wrapping a
`SharedLimiter`; it needs no CPU and answers one lease call at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import orjson
import ray
import ray.data

from pipeline.config.settings import RunConfig
from pipeline.engines.ray.budget import BudgetAsk, BudgetReply, ClusterBudget
from pipeline.engines.ray.copies import CopyExchange, CopyRegistry, CopyReply
from pipeline.engines.ray.labeller import ShardLabeller, ShardSpec, ShardSummary
from pipeline.engines.ray.leases import Grant, LeaseRequest, SharedLimiter
from pipeline.engines.ray.watchdog import start_watchdog

__all__ = ["NAMESPACE", "cluster_cpus", "connect", "label_shards", "limiter_counts", "start_limiter",
           "start_registry"]

NAMESPACE = "moderate"


@contextlib.contextmanager
def connect(address: str | None, *, log_to_driver: bool = True) -> Iterator[None]:
    """Connect to the cluster at ``address`` (None: start a Ray instance on this machine), unless
    this process is connected already; disconnect at the end if this call connected.

    ``log_to_driver``: False keeps the actors' own lines out of the driver's output (JSON logs).
    """
    if ray.is_initialized():
        yield
        return
    options: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": logging.WARNING,
                               "log_to_driver": log_to_driver}
    own = address is None and not os.environ.get("RAY_ADDRESS")  # a new Ray instance on this machine
    if own:
        options["include_dashboard"] = False
    # Ray's agents outlive a driver killed with SIGKILL by minutes: the watchdog ends them
    done = start_watchdog() if own else None
    try:
        ray.init(address=address, **options)
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # one line per dataset step otherwise
        yield
    finally:
        ray.shutdown()  # on every way out: the end, an error, a signal
        if done is not None:
            done()


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@ray.remote(num_cpus=0)
class LimiterActor:
    """The run's one `SharedLimiter` and its budget, on the clock of the machine it lives on."""

    def __init__(self, settings: dict[str, Any], cap: float | None = None, spent: float = 0.0) -> None:
        self._limiter = SharedLimiter(now=time.monotonic(), **settings)
        self._budget = ClusterBudget(cap, spent=spent)

    def budget(self, request: BudgetAsk) -> BudgetReply:
        return self._budget.ask(request, now=time.monotonic())

    def lease(self, request: LeaseRequest) -> Grant:
        return self._limiter.lease(request, now=time.monotonic())

    def halt(self, reason: str) -> None:
        self._limiter.halt(reason)

    def halted(self) -> str | None:
        return self._limiter.halted

    def interrupt(self) -> None:
        self._limiter.interrupt()

    def interrupted(self) -> bool:
        return self._limiter.interrupted

    def counts(self) -> dict[str, int]:
        limiter = self._limiter
        return {"calls": limiter.calls, "used": limiter.granted - limiter.returned, "reported": limiter.reported,
                "budget_calls": self._budget.calls, "budget_released": self._budget.released}


@ray.remote(num_cpus=0)
class CopiesActor:
    """The run's one `CopyRegistry`."""

    def __init__(self) -> None:
        self._registry = CopyRegistry()

    def exchange(self, request: CopyExchange) -> CopyReply:
        return self._registry.exchange(request, now=time.monotonic())

    def counts(self) -> dict[str, int]:
        r = self._registry
        return {"copy_calls": r.calls, "claimed": r.claimed, "copies": r.copies}


def start_registry(run_id: str) -> Any:
    """The run's registry of answers (named ``copies-<run id>``); it lives as long as its handle."""
    registry = CopiesActor.options(name=f"copies-{run_id}", namespace=NAMESPACE).remote()
    ray.get(registry.counts.remote())  # up before the workers look it up by name
    return registry


def start_limiter(config: RunConfig, run_id: str, *, spent: float = 0.0) -> Any:
    """The run's limiter actor (named ``limiter-<run id>`` in namespace ``moderate``), holding its budget."""
    settings = {"rpm": config.rpm or None, "tpm": config.tpm or None, "adaptive": config.adaptive,
                "max_retry_after": config.max_retry_after}
    return LimiterActor.options(name=f"limiter-{run_id}", namespace=NAMESPACE).remote(settings, config.max_cost,
                                                                                      spent)


def limiter_counts(limiter: Any, registry: Any) -> dict[str, int]:
    return {**ray.get(limiter.counts.remote()), **ray.get(registry.counts.remote())}


class _RayLabeller:
    """A `map_batches` actor: a `ShardLabeller` leasing capacity from the named limiter."""

    def __init__(self, spec: ShardSpec, limiter_name: str) -> None:
        handle = ray.get_actor(limiter_name, namespace=NAMESPACE)
        copies = ray.get_actor(f"copies-{spec.run_id}", namespace=NAMESPACE)

        async def lease(request: LeaseRequest) -> Grant:
            return await handle.lease.remote(request)

        async def budget(request: BudgetAsk) -> BudgetReply:
            return await handle.budget.remote(request)

        async def exchange(request: CopyExchange) -> CopyReply:
            return await copies.exchange.remote(request)

        self._labeller = ShardLabeller(spec, lease, halted=lambda: ray.get(handle.halted.remote()),
                                       halt=lambda reason: ray.get(handle.halt.remote(reason)),
                                       interrupted=lambda: ray.get(handle.interrupted.remote()),
                                       copies=exchange, copies_now=lambda r: ray.get(copies.exchange.remote(r)),
                                       budget=budget)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        summaries = [self._labeller.label(int(index)) for index in batch["shard"]]
        return {"summary": [orjson.dumps(asdict(s)).decode() for s in summaries]}

    def __del__(self) -> None:  # the pool is done with this actor: close its connections
        with contextlib.suppress(Exception):
            self._labeller.close()


def label_shards(spec: ShardSpec, shards: list[int], *, limiter: Any, actors: int,
                 cpus_per_actor: float = 1.0) -> Iterator[ShardSummary]:
    """Label ``shards`` on a pool of ``actors``; yields each shard's summary as it is done."""
    if not shards:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.execution_options.preserve_order = False
    ray.get(limiter.counts.remote())  # the limiter is up before the workers look it up by name
    name = f"limiter-{spec.run_id}"
    dataset = ray.data.from_items([{"shard": k} for k in shards], override_num_blocks=len(shards))
    labelled = dataset.map_batches(
        _RayLabeller, fn_constructor_kwargs={"spec": spec, "limiter_name": name}, batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=max(1, min(actors, len(shards)))), num_cpus=cpus_per_actor)
    for batch in labelled.iter_batches(batch_size=None, batch_format="numpy"):
        for raw in batch["summary"]:
            yield ShardSummary(**orjson.loads(str(raw)))
