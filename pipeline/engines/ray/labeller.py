"""Labels whole shards in one worker process, with the local engine's `Run` (no Ray here).

A `ShardLabeller` lives as long as its process: one event loop, one connection pool (the
endpoint's), one throttle. For each shard it runs the local engine's `Run` over input rows
[k*R, (k+1)*R), with the shard's own result store (`pipeline.engines.ray.ledger`), and writes the
shard file atomically as the local engine does. The driver gets a `ShardSummary` and lists the
shard in the manifest; only the driver writes the manifest.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import os
import pickle
import sqlite3
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

from pipeline.call.endpoints import open_endpoint
from pipeline.core.errors import UserError
from pipeline.core.records import Outcome, Status
from pipeline.core.storage import StorageSettings, configure
from pipeline.engines.job import Job, build_run
from pipeline.engines.local.runner import Run
from pipeline.engines.ray.budget import BudgetAsk, BudgetReply, RemoteBudget
from pipeline.engines.ray.copies import CopyExchange, CopyReply
from pipeline.engines.ray.shardstores import SNAPSHOT_S, ShardStores
from pipeline.engines.ray.sharing import CopyCall, SharedState, share
from pipeline.engines.ray.throttle import Lease, LeasedThrottle
from pipeline.engines.runlog import RunLog
from pipeline.engines.runstate import RunTally
from pipeline.output import open_output_dir
from pipeline.output.outdir import Manifest
from pipeline.output.store import ResultStore, StoreError
from pipeline.readers import InputError

__all__ = ["ShardLabeller", "ShardSpec", "ShardSummary"]

#: how often a shard under way asks whether the driver was signalled
INTERRUPT_POLL_S = 0.25


@dataclass(slots=True)
class ShardSpec:
    """What every worker process needs to label any shard of the run (sent to each once)."""

    job: Job
    out_id: str
    run_id: str
    shard_rows: int
    #: the driver's object-store settings (endpoint, credentials) as environment variables
    storage_env: dict[str, str] = field(default_factory=dict)
    #: whether an input row (by number) is in the sample (``--sample``); None: every row is
    sample: Callable[[int], bool] | None = None
    #: canary requests (index, policy index, text), sent with the rows of shard ``canary_shard``
    canaries: list[tuple[int, int, str]] = field(default_factory=list)
    canary_shard: int | None = None
    #: ``--store``: a store every node reads before paying (the driver adds the run's answers at the end)
    shared_store: str | None = None


@dataclass(slots=True)
class ShardSummary:
    """What labelling one shard came to (plain values: it travels back to the driver)."""

    index: int
    #: the shard's manifest entry (ShardInfo's fields) once its file is written, else None
    shard: dict | None
    rows_read: int
    labels: int = 0
    sent: int = 0
    store_hits: int = 0
    duplicates: int = 0
    billed_calls: int = 0
    tokens: int = 0
    spent_usd: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    #: [policy, violation, count]
    violations: list[list] = field(default_factory=list)
    internal_errors: int = 0
    stop_status: str | None = None
    fatal_error: str | None = None
    write_error: str | None = None
    internal_error: str | None = None
    internal_traceback: str | None = None
    #: a user's mistake met while labelling (an input gone or unreadable, a store that cannot be written)
    error: str | None = None
    elapsed: float = 0.0
    #: not begun: another shard had stopped the run
    skipped: bool = False
    #: rows answered by a copy of another shard's answer (counted in ``duplicates`` too)
    copied: int = 0
    #: the canaries' answers by canary index (pickled, base64), from the shard that sent them
    canary_answers: str | None = None

    def unpack_canaries(self) -> dict[int, Outcome]:
        return pickle.loads(base64.b64decode(self.canary_answers)) if self.canary_answers else {}

    @property
    def stops_the_run(self) -> str | None:
        """Why no other shard should begin: a refusal of the whole run, a failed write, a user's mistake."""
        return self.fatal_error or self.write_error or self.error


class ShardLabeller:
    def __init__(self, spec: ShardSpec, lease: Lease | None, *, halted: Callable[[], str | None] | None = None,
                 halt: Callable[[str], None] | None = None, interrupted: Callable[[], bool] | None = None,
                 copies: CopyCall | None = None, copies_now: Callable[[CopyExchange], CopyReply] | None = None,
                 budget: Callable[[BudgetAsk], Awaitable[BudgetReply]] | None = None) -> None:
        """``lease`` reaches the shared limiter; None: this process applies the limits alone.

        ``halted`` says whether a shard stopped the run (then no other begins); ``halt`` says so.
        ``interrupted`` says whether the driver was signalled: a shard under way then stops as a
        signalled local run does (calls in flight get the grace period, every answer is stored).
        ``copies`` (awaited) and ``copies_now`` (called from the planner) reach the run's
        `CopyRegistry`; ``budget`` the cluster's budget (`pipeline.engines.ray.sharing`).
        """
        self.spec = spec
        self._halted, self._halt, self._interrupted = halted, halt, interrupted
        self._copies, self._copies_now, self._budget = copies, copies_now, budget
        config = spec.job.config
        for name, value in spec.storage_env.items():  # a worker on another node reads the store as the driver does
            os.environ[name] = value
        configure(StorageSettings(config.storage_endpoint_url, config.storage_timeout, config.storage_lock))
        self.stores = ShardStores(config.out)
        # read only: never started, so this process never writes it
        self._shared_store = ResultStore(spec.shared_store) if spec.shared_store else None
        self.loop = asyncio.new_event_loop()
        self._stack = contextlib.AsyncExitStack()
        self.endpoint = self.loop.run_until_complete(open_endpoint(
            self._stack, config, api_key=spec.job.api_key, transport=None, stream=sys.stderr))
        self.leased = LeasedThrottle(lease, chunk=max(1, config.concurrency)) if lease is not None else None

    def label(self, index: int) -> ShardSummary:
        if self._halted is not None and self._halted():
            return ShardSummary(index, None, 0, skipped=True)
        summary = self._label(index)
        if self._halt is not None and (reason := summary.stops_the_run):
            self._halt(reason)
        return summary

    def _label(self, index: int) -> ShardSummary:
        spec, job = self.spec, self.spec.job
        first, end = index * spec.shard_rows, (index + 1) * spec.shard_rows
        inputs = copy.copy(job.inputs)  # the same files, read up to the shard's end
        inputs.limit = end if job.inputs.limit is None else min(job.inputs.limit, end)
        try:
            store = ResultStore(self.stores.checkout(index))
        except (UserError, sqlite3.Error) as exc:
            return ShardSummary(index, None, 0, error=f"{self.stores.out}: shard {index}'s store: {exc}")
        manifest = Manifest(spec.out_id, {}, spec.shard_rows)
        outdir = open_output_dir(job.config.out, kept=job.inputs.kept_fields)
        run = build_run(job.config, inputs=inputs, plans=job.plans, endpoint=self.endpoint, store=store,
                        outdir=outdir, manifest=manifest, pricing=job.pricing, api_key=job.api_key,
                        model=job.model, log=RunLog(sys.stderr, secret=job.api_key), progress=None,
                        control=self.leased, run_id=spec.run_id, first_row=first, manifest_file=False,
                        sample=spec.sample, canaries=spec.canaries if index == spec.canary_shard else None)
        cap = job.config.max_cost
        shared = SharedState(run_id=spec.run_id, call=self._copies, call_now=self._copies_now, store=store,
                             out_id=spec.out_id, also=self._shared_store.lookup if self._shared_store else None,
                             budget=None if cap is None or self._budget is None else
                             RemoteBudget(cap, self._budget, owner=f"{os.getpid()}:{index}:{uuid.uuid4().hex[:8]}"))
        share(run, shared)
        try:
            result = self.loop.run_until_complete(self._execute(run, index, shared))
        except (InputError, StoreError) as exc:
            return ShardSummary(index, None, 0, error=str(exc))
        finally:
            store.close()
            if self.leased is not None:
                self.loop.run_until_complete(self.leased.close())
        try:
            self.stores.checkin(index)
        except UserError as exc:  # the labels are written; their answers did not reach the output folder
            return ShardSummary(index, None, 0, error=f"cannot keep shard {index}'s answers: {exc}")
        info = manifest.shards.get(index)
        summary = summarise(index, result, None if info is None else asdict(info), first)
        summary.duplicates += shared.copied
        summary.copied = shared.copied
        if index == spec.canary_shard and run.canary_answers:
            summary.canary_answers = base64.b64encode(pickle.dumps(dict(run.canary_answers))).decode()
        return summary

    async def _execute(self, run: Run, index: int, shared: SharedState) -> RunTally:
        helpers = [asyncio.create_task(shared.keep_in_touch())]
        if self._interrupted is not None:
            helpers.append(asyncio.create_task(self._watch(run)))
        if self.stores.remote:
            helpers.append(asyncio.create_task(self._upload_now_and_then(index)))
        try:
            return await run.execute()
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await shared.exchange(last=True)  # answers published, claims not answered released, budget settled

    async def _upload_now_and_then(self, index: int) -> None:
        """A process killed mid-shard loses at most `SNAPSHOT_S` seconds of answers."""
        while True:
            await asyncio.sleep(SNAPSHOT_S)
            with contextlib.suppress(UserError, sqlite3.Error, OSError):  # the next try, or the end, uploads it
                await asyncio.to_thread(self.stores.checkin, index)

    async def _watch(self, run: Run) -> None:
        """Stop ``run`` once the driver was signalled (asked in a thread: the limiter is another process)."""
        while not await asyncio.to_thread(self._interrupted):  # type: ignore[arg-type]
            await asyncio.sleep(INTERRUPT_POLL_S)
        run.request_stop(Status.INTERRUPTED)

    def close(self) -> None:
        self.loop.run_until_complete(self._stack.aclose())
        self.loop.close()
        self.stores.close()
        if self._shared_store is not None:
            self._shared_store.close()


def summarise(index: int, result: RunTally, shard: dict | None, first_row: int) -> ShardSummary:
    s = result.stats
    return ShardSummary(
        index=index, shard=shard, rows_read=max(0, result.rows_read - first_row), labels=s.labels, sent=s.sent,
        store_hits=s.store_hits, duplicates=s.duplicates, billed_calls=s.billed_calls, tokens=s.tokens,
        spent_usd=s.spent_usd, statuses={str(k): v for k, v in s.statuses.items()},
        violations=[[policy, violation, n] for (policy, violation), n in s.violations.items()],
        internal_errors=s.internal_errors, stop_status=None if result.stop_status is None else str(result.stop_status),
        fatal_error=result.fatal_error, write_error=result.write_error, internal_error=result.internal_error,
        internal_traceback=result.internal_traceback, elapsed=result.elapsed,
    )
