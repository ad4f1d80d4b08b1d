"""One run: reader -> planner -> workers -> store + shards, on one asyncio loop.

The feeder reads input batches (in a thread, so parsing overlaps network work) and hands them to
the planner; labels known at once go to their shard, requests to the bounded work queue, which a
fixed set of workers (`pipeline.engines.local.worker`) drains. Answers go to the store at once (a background
thread commits them) and into their shard (`pipeline.engines.local.recorder`); a complete shard is written in
a writer thread and recorded in the manifest (`pipeline.engines.local.shardwriter`). The run returns a
`RunTally`; signals, printing and exit codes belong to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence

from pipeline.call.router import Router
from pipeline.core.cost import Pricing
from pipeline.core.records import Status
from pipeline.engines.local.recorder import Recorder
from pipeline.engines.local.shardwriter import ShardWriter
from pipeline.engines.local.worker import Dispatcher
from pipeline.engines.local.workqueue import WorkQueue
from pipeline.engines.progress import Progress
from pipeline.engines.runstate import RunSettings, RunStats, RunTally
from pipeline.output.outdir import Manifest, OutputDir
from pipeline.output.store import ResultStore, StoreError
from pipeline.plan.planner import Planner, PolicyPlan, Task
from pipeline.plan.shards import ShardAssembler
from pipeline.ratecontrol import RetryRules
from pipeline.ratecontrol.budget import Budget
from pipeline.readers import InputSet

BATCH_ROWS = 2048
#: answers waiting for the store's commit thread before the workers pause (bounds memory).
STORE_BACKLOG = 4096
#: seconds between two looks for stragglers
STRAGGLER_TICK_S = 0.05


class Run:
    """Drives one run over an opened input, store and output directory."""

    def __init__(self, *, inputs: InputSet, plans: list[PolicyPlan], router: Router, rules: RetryRules,
                 pricing: Pricing, budget: Budget, store: ResultStore, outdir: OutputDir,
                 manifest: Manifest, settings: RunSettings, progress: Progress | None = None,
                 sample: Callable[[int], bool] | None = None, canaries: Sequence[tuple[int, int, str]] = (),
                 manifest_file: bool = True) -> None:
        self.inputs, self.plans, self.store, self.outdir = inputs, plans, store, outdir
        self.manifest, self.settings, self.progress = manifest, settings, progress
        self.stats = RunStats()
        self.result = RunTally(self.stats, 0.0, 0, None)
        self._grace_deadline: float | None = None
        self._queue: WorkQueue[Task] = WorkQueue(high=max(settings.concurrency * 4, BATCH_ROWS))
        self.writer = ShardWriter(outdir, manifest, on_error=self._write_failed, manifest_file=manifest_file)
        self.shards = ShardAssembler(shard_rows=settings.shard_rows, is_done=self._shard_done,
                                     on_complete=self.writer.write)
        self.planner = Planner(plans=plans, shards=self.shards, run_id=settings.run_id, too_long=settings.too_long,
                               max_tokens=settings.max_tokens, lookup=store.lookup, sample=sample)
        self.recorder = Recorder(stats=self.stats, store=store, settings=settings, planner=self.planner,
                                 shards=self.shards)
        #: canary requests (index, policy index, text), queued after the first batch; their answers by index
        self._canaries = [self.planner.canary_task(i, plans[p], text) for i, p, text in canaries]
        self.canary_answers = self.recorder.canary_answers
        self.dispatcher = Dispatcher(queue=self._queue, router=router, rules=rules, budget=budget,
                                     pricing=pricing, keep_reasoning=settings.keep_reasoning, pace=self._pace,
                                     finish=self.recorder.finish, stop=self.request_stop, rng=random.Random(),
                                     spawn=self._spawn)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: workers started in the place of requests turned stragglers, not yet awaited
        self._spawned: set[asyncio.Task] = set()
        self._all_spawned: set[asyncio.Task] = set()

    async def execute(self) -> RunTally:
        self._loop = asyncio.get_running_loop()
        self.dispatcher.released = asyncio.Event()
        self.dispatcher.stopping = asyncio.Event()
        self.store.start(on_commit=self._committed_threadsafe, on_error=self._store_failed_threadsafe)
        started = time.monotonic()
        feeder = asyncio.create_task(self._feed())
        workers = [asyncio.create_task(self.dispatcher.work()) for _ in range(self.settings.concurrency)]
        ticker = asyncio.create_task(self._tick())
        watcher = asyncio.create_task(self._watch_stragglers())
        try:
            await _drain({feeder, *workers}, lambda: self._grace_deadline, on_failure=self._queue.stop,
                         spawned=self._spawned)
        finally:
            others = (ticker, watcher, feeder, *workers, *self._all_spawned)
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            self.result.elapsed = time.monotonic() - started
            if self.result.write_error is not None and not self.result.input_exhausted:
                # answers the store could not take are kept in their shards at least
                self.shards.close_stopped(labels_per_row=len(self.plans))
            await self.writer.close()
            self._tick_once()
        self.stats.internal_errors = self.dispatcher.internal_errors
        self.result.internal_error = self.dispatcher.first_internal_error
        self.result.internal_traceback = self.dispatcher.first_traceback
        self.stats.store_hits, self.stats.duplicates = self.planner.store_hits, self.planner.duplicates
        return self.result

    def request_stop(self, status: Status, error: str | None = None) -> None:
        """Stop sending: budget reached, a signal, a fatal endpoint error or a failed write."""
        if error and status is Status.ABORTED and self.result.fatal_error is None and self.result.write_error is None:
            self.result.fatal_error = error
        if self.result.stop_status is not None:
            return
        self.result.stop_status = self.dispatcher.stop_status = status
        if status is not Status.BUDGET_EXHAUSTED:  # a budget stop still labels every row
            self._queue.stop()
            if self.dispatcher.stopping is not None:
                self.dispatcher.stopping.set()
            self.dispatcher.router.wake_all()
        if status is Status.INTERRUPTED:
            self._grace_deadline = time.monotonic() + self.settings.grace_seconds

    # -- feeding -----------------------------------------------------------------------------
    async def _feed(self) -> None:
        skip = max(_complete_prefix(self.manifest) * self.settings.shard_rows, self.settings.first_row)
        row_number = skip
        batches = self.inputs.batches(batch_size=BATCH_ROWS, skip_rows=skip)
        place = self.recorder.place
        try:
            while self.result.stop_status not in (Status.INTERRUPTED, Status.ABORTED):
                batch = await asyncio.to_thread(next, batches, None)
                if self._canaries:  # mixed in with the first rows: sent under the same conditions
                    canaries, self._canaries = self._canaries, []
                    await self._queue.put_many(canaries)
                if batch is None:
                    # only a fully read input closes its last shards: after a stop a shard may lack
                    # rows, and the next run rebuilds it
                    self.result.input_exhausted = True
                    self.shards.close_all()
                    break
                placements, tasks = self.planner.plan(batch, row_number)
                for p in placements:
                    place(p.slot, p.outcome, p.source, p.fingerprint)
                await self._queue.put_many(tasks)
                row_number += len(batch.ids)
        finally:
            self.result.rows_read = row_number
            self._queue.close()

    async def _pace(self) -> None:
        """Backpressure: answers must not pile up faster than the store can commit them."""
        try:
            if self.store.backlog() > STORE_BACKLOG:
                while self.store.backlog() > STORE_BACKLOG // 2:
                    await asyncio.sleep(0.005)
        except StoreError as exc:  # the store cannot be written (disk full, locked): stop
            self._write_failed(str(exc))

    # -- shards ------------------------------------------------------------------------------
    def _shard_done(self, index: int) -> bool:
        info = self.manifest.shards.get(index)
        return info is not None and info.complete

    def _write_failed(self, message: str) -> None:
        if self.result.write_error is None:
            self.result.write_error = message
        self.request_stop(Status.ABORTED)

    # -- bookkeeping -------------------------------------------------------------------------
    def _committed_threadsafe(self, fingerprints: list[bytes]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.planner.committed, fingerprints)

    def _store_failed_threadsafe(self, message: str) -> None:
        """The first failed commit stops sending at once: answers from then on cannot be saved."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._write_failed, message)

    def _spawn(self) -> None:
        task = asyncio.create_task(self.dispatcher.work())
        self._spawned.add(task)
        self._all_spawned.add(task)
        task.add_done_callback(self._all_spawned.discard)

    async def _watch_stragglers(self) -> None:
        routes = [r for r in self.dispatcher.router.routes if r.watch is not None and r.watch.cap]
        if not routes:
            return
        while True:
            await asyncio.sleep(STRAGGLER_TICK_S)
            self.dispatcher.release_stragglers(time.monotonic())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self._tick_once()

    def _tick_once(self) -> None:
        if self.progress:
            self.progress.update(done=self.stats.labels, tokens=self.stats.tokens, cost_usd=self.stats.spent_usd)


def _complete_prefix(manifest: Manifest) -> int:
    """How many leading shards are complete (their rows are skipped without reading)."""
    count = 0
    while (info := manifest.shards.get(count)) is not None and info.complete:
        count += 1
    return count


async def _drain(pending: set[asyncio.Task], grace_deadline: Callable[[], float | None], *,
                 on_failure: Callable[[], None], spawned: set[asyncio.Task] | None = None) -> None:
    """Wait for the feeder and workers; after an interrupt, give calls in flight a grace period.

    A feeder that failed (an input unreadable mid-run) or a worker that died (a bug) ends the
    run with that exception (after ``on_failure``), never with a silent "finished". Workers started
    meanwhile (``spawned``, emptied here) are waited for too.
    """
    spawned = spawned if spawned is not None else set()
    while pending or spawned:
        pending |= spawned
        spawned.clear()
        deadline = grace_deadline()
        timeout = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
        done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                on_failure()
                raise task.exception()  # type: ignore[misc]
        if deadline is not None and time.monotonic() >= deadline:
            break
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
