"""One run: reader -> planner -> workers -> store + shards, on one asyncio loop.

The feeder reads input batches (in a thread, so parsing overlaps network work), plans each
(row, policy) pair — skipped, served from the store or from an identical text already in flight,
or queued for a call — and a fixed set of workers drains the bounded queue. Answers are put in the
store at once (a background thread commits them) and placed in their shard; a shard is written
when every one of its labels is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from pipeline.exitcodes import EXIT_INTERRUPTED
from pipeline.judge import FatalEndpointError, Judge
from pipeline.labels import label_row
from pipeline.outdir import Manifest, OutputDir
from pipeline.plan import PolicyPlan, RunSettings, RunStats, Shard, Slot, Task
from pipeline.progress import Progress
from pipeline.prompt import fingerprint, neutralise, normalise
from pipeline.readers import InputSet, RowBatch
from pipeline.records import FINAL_STATUSES, Outcome, Status
from pipeline.store import ResultStore, StoreError
from pipeline.tokens import fits, truncate
from pipeline.workqueue import WorkQueue

BATCH_ROWS = 2048
#: answers waiting for the store's commit thread before the workers pause (bounds memory).
STORE_BACKLOG = 4096


class Run:
    """Drives one run over an opened input, store and output directory."""

    def __init__(self, *, inputs: InputSet, plans: list[PolicyPlan], judge: Judge, store: ResultStore,
                 outdir: OutputDir, manifest: Manifest, settings: RunSettings,
                 progress: Progress | None = None) -> None:
        self.inputs = inputs
        self.plans = plans
        self.judge = judge
        self.store = store
        self.outdir = outdir
        self.manifest = manifest
        self.settings = settings
        self.progress = progress
        self.stats = RunStats()
        self.stop_status: Status | None = None
        self.fatal_error: str | None = None
        self.store_error: str | None = None
        self._grace_deadline: float | None = None
        self.rows_read = 0
        #: seconds the run took (set when `execute` ends)
        self.elapsed = 0.0
        self._queue: WorkQueue[Task] = WorkQueue(high=max(settings.concurrency * 4, BATCH_ROWS))
        self._inflight: dict[bytes, list[Slot]] = {}
        self._recent: dict[bytes, Outcome] = {}
        self._shards: dict[int, Shard] = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._writes: list[asyncio.Future] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0
        self._mean_completion = float(judge.settings.expected_completion_tokens)

    # -- public ------------------------------------------------------------------------------
    async def execute(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.start(on_commit=self._committed_threadsafe)
        self._install_signal_handlers()
        started = time.monotonic()
        workers = [asyncio.create_task(self._work()) for _ in range(self.settings.concurrency)]
        ticker = asyncio.create_task(self._tick())
        try:
            await self._feed()
            await self._drain(workers)
        finally:
            ticker.cancel()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, ticker, return_exceptions=True)
            self._remove_signal_handlers()
            self.elapsed = time.monotonic() - started
            if self._writes:
                await asyncio.gather(*self._writes)
            self._writer.shutdown(wait=True)
            if self.progress:
                self.progress.update(done=self.stats.labels, tokens=self.stats.tokens,
                                     cost_usd=self.stats.spent_usd)

    def request_stop(self, status: Status) -> None:
        """Stop sending: budget reached, a signal, or a fatal endpoint error."""
        if self.stop_status is None:
            self.stop_status = status
            self.judge.stop_status = status
            if status is not Status.BUDGET_EXHAUSTED:  # a budget stop still labels every row
                self._queue.stop()
            if status is Status.INTERRUPTED:
                self._grace_deadline = time.monotonic() + self.settings.grace_seconds

    # -- feeding -----------------------------------------------------------------------------
    async def _feed(self) -> None:
        skip = _complete_prefix(self.manifest) * self.settings.shard_rows
        row_number = skip
        batches = self.inputs.batches(batch_size=BATCH_ROWS, skip_rows=skip)
        exhausted = False
        try:
            while True:
                if self.stop_status in (Status.INTERRUPTED, Status.ABORTED):
                    break
                batch = await asyncio.to_thread(next, batches, None)
                if batch is None:
                    exhausted = True
                    break
                await self._queue.put_many(self._plan(batch, row_number))
                row_number += len(batch.ids)
        finally:
            self.rows_read = row_number
            # Only a fully read input closes its last shards: after a signal, a fatal error or
            # an unreadable file, a shard may lack rows, and the next run rebuilds it.
            if exhausted:
                for shard in list(self._shards.values()):
                    shard.closed = True
                    self._maybe_flush(shard)
            self._queue.close()

    def _plan(self, batch: RowBatch, first_row: int) -> list[Task]:
        plans = self.plans
        n_policies = len(plans)
        candidates: list[Task] = []
        errors = batch.errors
        for i, (row_id, text) in enumerate(zip(batch.ids, batch.texts, strict=True)):
            row_number = first_row + i
            shard = self._shard_for(row_number)
            if shard is None:
                continue
            base = len(shard.labels)
            shard.labels.extend([None] * n_policies)
            shard.rows += 1
            shard.pending += n_policies
            error = errors[i] if errors is not None else None
            user = None if error or text is None else neutralise(normalise(text))
            for plan in plans:
                slot = Slot(shard, base + plan.index, row_id, row_number, batch.source, plan)
                if error is not None:
                    self._place(slot, Outcome(Status.INPUT_ERROR, error=error), "none", None)
                elif not user:
                    self._place(slot, Outcome(Status.SKIPPED_EMPTY), "none", None)
                else:
                    sent = user
                    if not fits(sent, plan.text_budget):
                        if self.settings.too_long == "skip":
                            outcome = Outcome(Status.TOO_LONG, error=f"content over {plan.text_budget} tokens")
                            self._place(slot, outcome, "none", None)
                            continue
                        sent = truncate(sent, plan.text_budget)
                    candidates.append(Task(fingerprint(plan.key, sent), sent, slot))
        return self._dedupe(candidates)

    def _dedupe(self, candidates: list[Task]) -> list[Task]:
        """Serve what is known (this run or the store); queue one call per new fingerprint."""
        inflight, recent = self._inflight, self._recent
        unknown = [t.fingerprint for t in candidates if t.fingerprint not in recent and t.fingerprint not in inflight]
        stored = self.store.lookup(unknown) if unknown else {}
        tasks: list[Task] = []
        run_id = self.settings.run_id
        for task in candidates:
            fp = task.fingerprint
            if fp in recent:
                self.stats.duplicates += 1
                self._place(task.slot, recent[fp], "duplicate", fp)
            elif fp in inflight:
                inflight[fp].append(task.slot)
            elif fp in stored:
                hit = stored[fp]
                if hit.run_id == run_id:
                    self.stats.duplicates += 1
                    self._place(task.slot, hit.outcome, "duplicate", fp)
                else:
                    self.stats.store_hits += 1
                    self._place(task.slot, hit.outcome, "store", fp)
            else:
                inflight[fp] = []
                tasks.append(task)
        return tasks

    def _shard_for(self, row_number: int) -> Shard | None:
        index = row_number // self.settings.shard_rows
        shard = self._shards.get(index)
        if shard is not None:
            return shard
        done = self.manifest.shards.get(index)
        if done is not None and done.complete:
            return None
        for previous in list(self._shards.values()):  # the reader moved past them
            if previous.index < index and not previous.closed:
                previous.closed = True
                self._maybe_flush(previous)
        shard = Shard(index, index * self.settings.shard_rows)
        self._shards[index] = shard
        return shard

    # -- working -----------------------------------------------------------------------------
    async def _work(self) -> None:
        queue = self._queue
        judge = self.judge
        settings = self.settings
        while True:
            task = await queue.get()
            if task is None:
                return
            if self.stop_status is not None:
                self._finish(task, Outcome(self.stop_status), "none")
                continue
            plan = task.slot.plan
            estimate = 0.0
            if settings.max_cost is not None:
                estimate = settings.estimate_call_usd(plan, task.user, self._mean_completion)
                spent = settings.spent_before + self.stats.spent_usd + self.stats.reserved_usd
                if spent + estimate > settings.max_cost:
                    self.request_stop(Status.BUDGET_EXHAUSTED)
                    self._finish(task, Outcome(Status.BUDGET_EXHAUSTED), "none")
                    continue
                self.stats.reserved_usd += estimate
            try:
                outcome = await judge.judge(system=plan.system, system_tokens=plan.system_tokens, user=task.user)
            except FatalEndpointError as exc:
                self.fatal_error = str(exc)
                self.request_stop(Status.ABORTED)
                outcome = exc.outcome  # keeps what earlier attempts were billed
                outcome.status, outcome.error, outcome.verdict = Status.ABORTED, str(exc), None
            except asyncio.CancelledError:
                self._finish(task, Outcome(Status.INTERRUPTED, error="stopped before the answer came"), "none")
                raise
            finally:
                self.stats.reserved_usd -= estimate
            self._finish(task, outcome, "api" if outcome.attempts else "none")
            try:
                if self.store.backlog() > STORE_BACKLOG:
                    await self._wait_for_store()
            except StoreError as exc:  # the store cannot be written (disk full, locked): stop
                self.store_error = str(exc)
                self.request_stop(Status.ABORTED)

    async def _wait_for_store(self) -> None:
        """Backpressure: answers must not pile up faster than the store can commit them."""
        while self.store.backlog() > STORE_BACKLOG // 2:
            await asyncio.sleep(0.005)

    def _finish(self, task: Task, outcome: Outcome, source: str) -> None:
        fp = task.fingerprint
        stats = self.stats
        if source == "api":
            stats.sent += 1
            stats.billed_calls += outcome.billed_calls
            stats.tokens += outcome.usage.prompt_tokens + outcome.usage.completion_tokens
            stats.spent_usd += outcome.cost_usd
            if outcome.billed_calls:
                self._mean_completion += 0.05 * (outcome.usage.completion_tokens / outcome.billed_calls
                                                 - self._mean_completion)
            self.store.put(fingerprint=fp, outcome=outcome, policy=task.slot.plan.policy.name,
                           out_id=self.settings.out_id, run_id=self.settings.run_id)
            if outcome.status in FINAL_STATUSES:
                self._recent[fp] = outcome
        self._place(task.slot, outcome, source, fp)
        waiters = self._inflight.pop(fp, None)
        if waiters:
            stats.duplicates += len(waiters)
            for slot in waiters:
                self._place(slot, outcome, "duplicate", fp)

    def _place(self, slot: Slot, outcome: Outcome, source: str, fp: bytes | None) -> None:
        settings = self.settings
        plan = slot.plan
        shard = slot.shard
        shard.labels[slot.offset] = label_row(
            row_id=slot.row_id, policy=plan.policy.name, outcome=outcome, model=settings.model,
            policy_version=plan.version, reasoning_effort=settings.reasoning_effort,
            output_format=settings.output_format, source=source, fingerprint=fp,
            row_number=slot.row_number, input_file=slot.input_file, run_id=settings.run_id,
        )
        status = outcome.status
        self.stats.labels += 1
        self.stats.statuses[status] += 1
        if outcome.verdict is not None and status is Status.OK:
            self.stats.violations[(plan.policy.name, outcome.verdict.violation)] += 1
        if status in (Status.BUDGET_EXHAUSTED, Status.INTERRUPTED, Status.ABORTED):
            shard.unsent += 1
        shard.pending -= 1
        if shard.pending == 0 and shard.closed:
            self._maybe_flush(shard)

    def _maybe_flush(self, shard: Shard) -> None:
        if shard.pending or not shard.closed or self._shards.get(shard.index) is not shard:
            return
        del self._shards[shard.index]
        if not shard.labels:
            return
        labels, shard.labels = shard.labels, []
        loop = self._loop or asyncio.get_running_loop()
        self._writes.append(loop.run_in_executor(
            self._writer, self._write_shard, shard.index, labels, shard.rows, shard.unsent))

    def _write_shard(self, index: int, labels: list[tuple], rows: int, unsent: int) -> None:
        info = self.outdir.write_shard(index, labels, input_rows=rows, unsent=unsent)
        self.manifest.shards[index] = info
        self.outdir.write_manifest(self.manifest)

    # -- stopping ----------------------------------------------------------------------------
    async def _drain(self, workers: list[asyncio.Task]) -> None:
        """Wait for the workers; after an interrupt, give calls in flight a grace period."""
        pending = set(workers)
        while pending:
            deadline = self._grace_deadline
            timeout = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
            _, pending = await asyncio.wait(pending, timeout=timeout)
            if deadline is not None and time.monotonic() >= deadline:
                break
        for worker in pending:
            worker.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            self.request_stop(Status.INTERRUPTED)
            print(f"moderate: {sig.name} received: finishing calls in flight (up to "
                  f"{self.settings.grace_seconds:g} s); send it again to stop at once",
                  file=sys.stderr, flush=True)
            return
        # Second signal: stop now. Answers already received are committed to the store; shards
        # on disk are whole; the next run resumes from there.
        print(f"moderate: {sig.name} received again: stopping now; run the same command to resume",
              file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            self.store.close()
        os._exit(EXIT_INTERRUPTED)

    # -- bookkeeping -------------------------------------------------------------------------
    def _committed_threadsafe(self, fingerprints: list[bytes]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._forget_recent, fingerprints)

    def _forget_recent(self, fingerprints: list[bytes]) -> None:
        recent = self._recent
        for fp in fingerprints:
            recent.pop(fp, None)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            if self.progress:
                self.progress.update(done=self.stats.labels, tokens=self.stats.tokens,
                                     cost_usd=self.stats.spent_usd)


def _complete_prefix(manifest: Manifest) -> int:
    """How many leading shards are complete (their rows are skipped without reading)."""
    count = 0
    while (info := manifest.shards.get(count)) is not None and info.complete:
        count += 1
    return count
