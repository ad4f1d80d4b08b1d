"""What a shard's `Run` shares with the rest of the cluster: copies of answers and the budget.

`share` fits a local `Run` with:

- a store lookup that, for what the shard's store does not know, claims the fingerprints in the
  run's `CopyRegistry` (one call per batch of rows): answers known elsewhere are copies, not calls;
- a `ClusterDispatcher`, whose workers wait for a text being asked elsewhere (the task comes back
  every `COPY_POLL_S`, holding no connection) and reserve every attempt in the cluster's budget;
- a helper (`SharedState.keep_in_touch`) that publishes answers (every `PUBLISH_S`), sends
  settlements and fetches the answers waited for (every `COPY_POLL_S` while rows wait).

A copy is kept in the shard's own store without its bill (it was paid once, by the shard that
asked), so a rerun of the shard takes it from there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.core.records import FINAL_STATUSES, Outcome
from pipeline.engines.local.runner import Run
from pipeline.engines.local.worker import Dispatcher
from pipeline.engines.ray.budget import GO, SPENT, RemoteBudget
from pipeline.engines.ray.copies import CopyExchange, CopyReply
from pipeline.output.store import ResultStore, StoredResult
from pipeline.plan.planner import Task

__all__ = ["ClusterDispatcher", "SharedState", "share"]

#: seconds between two looks at the registry while rows wait for a text asked elsewhere
COPY_POLL_S = 0.1
#: answers are published at least this often (at once when this shard itself waits for copies)
PUBLISH_S = 0.5
#: a process that owns claims calls the registry at least this often (it is alive)
HEARTBEAT_S = 5.0

CopyCall = Callable[[CopyExchange], Awaitable[CopyReply]]


class SharedState:
    """One shard's side of the registry and the budget (see the module docstring)."""

    def __init__(self, *, run_id: str, call: CopyCall | None, call_now: Callable[[CopyExchange], CopyReply] | None,
                 budget: RemoteBudget | None, store: ResultStore, out_id: str,
                 also: Callable[[list[bytes]], dict[bytes, StoredResult]] | None = None) -> None:
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # one per shard
        self.run_id, self.out_id = run_id, out_id
        self._call, self._call_now, self.budget, self.store = call, call_now, budget, store
        #: another store looked up before the registry (``--store``)
        self._also = also
        #: fingerprints asked elsewhere that a task here waits for; their answers once come; claims come here
        self.waiting: set[bytes] = set()
        self.ready: dict[bytes, Outcome] = {}
        self.taken: set[bytes] = set()
        #: fingerprints this shard claimed and has not answered yet
        self.owned: set[bytes] = set()
        self._publish: list[tuple[bytes, Outcome]] = []
        self._release: list[bytes] = []
        self._last_call = 0.0
        #: rows answered by a copy of another shard's answer
        self.copied = 0

    @property
    def copying(self) -> bool:
        return self._call is not None

    # -- the planner's lookup ------------------------------------------------------------------
    def lookup(self, fingerprints: list[bytes]) -> dict[bytes, StoredResult]:
        found = self.store.lookup(fingerprints)
        misses = [fp for fp in fingerprints if fp not in found]
        if misses and self._also is not None:
            found.update(self._also(misses))
            misses = [fp for fp in misses if fp not in found]
        if not misses or self._call_now is None:
            return found
        reply = self._call_now(self._outgoing(claim=misses))
        self._last_call = asyncio.get_running_loop().time()
        for fp, outcome in reply.answers.items():
            found[fp] = StoredResult(outcome, self.run_id)
            self.keep(fp, outcome)
            self.copied += 1
        self.owned.update(reply.mine)
        self.waiting.update(reply.elsewhere)
        return found

    def keep(self, fp: bytes, outcome: Outcome) -> None:
        """A copy goes into the shard's store unbilled: a rerun of the shard finds it there."""
        self.store.put(fingerprint=fp, outcome=dataclasses.replace(outcome, billed_calls=0), policy="",
                       out_id=self.out_id, run_id=self.run_id)

    # -- what the workers tell ------------------------------------------------------------------
    def finished(self, task: Task, source: str) -> None:
        fp = task.fingerprint
        if task.canary is not None or source == "duplicate" or fp not in self.owned:
            return
        self.owned.discard(fp)
        if source == "api" and task.outcome.status in FINAL_STATUSES:
            self._publish.append((fp, task.outcome))
        else:  # failed or never sent: whoever waits for it asks it
            self._release.append(fp)

    # -- the helper ------------------------------------------------------------------------------
    async def keep_in_touch(self) -> None:
        while True:
            await asyncio.sleep(COPY_POLL_S)
            await self.exchange()

    async def exchange(self, *, last: bool = False) -> None:
        """Publish, release, fetch what is waited for, settle the budget (``last``: the shard is done)."""
        if self.budget is not None:
            await self.budget.flush()
        if self._call is None:
            return
        if last:
            self._release += list(self.owned)
            self.owned.clear()
        wait = [fp for fp in self.waiting if fp not in self.ready and fp not in self.taken]
        now = asyncio.get_running_loop().time()
        since = now - self._last_call
        if not (wait or ((self._publish or self._release) and (last or since >= PUBLISH_S))
                or (self.owned and since > HEARTBEAT_S)):
            return
        reply = await self._call(self._outgoing(wait=wait))
        self._last_call = now
        self.ready.update(reply.answers)
        self.taken.update(reply.taken_over)

    def _outgoing(self, *, claim: list[bytes] | None = None, wait: list[bytes] | None = None) -> CopyExchange:
        publish, release, self._publish, self._release = self._publish, self._release, [], []
        return CopyExchange(self.owner, claim=claim or [], publish=publish, release=release, wait=wait or [])


@dataclass(slots=True)
class ClusterDispatcher(Dispatcher):
    """The local workers, waiting for copies and reserving in the cluster's budget."""

    shared: SharedState | None = None

    async def _step(self, task: Task) -> None:
        shared, fp = self.shared, task.fingerprint
        if shared is not None and task.canary is None and fp in shared.waiting and self.stop_status is None:
            answer = shared.ready.pop(fp, None)
            if answer is not None:  # asked and answered by another shard: a copy
                shared.waiting.discard(fp)
                task.outcome = answer
                shared.keep(fp, answer)
                shared.copied += 1
                self.finish(task, "duplicate")
                return None
            if fp not in shared.taken:
                self.queue.defer(task, COPY_POLL_S)
                return None
            shared.waiting.discard(fp)  # its asker gave up or is gone: ask it here
            shared.taken.discard(fp)
            shared.owned.add(fp)
        return await Dispatcher._step(self, task)

    async def _reserve(self, task: Task) -> tuple[float, float] | bool | None:
        budget = self.budget
        if not isinstance(budget, RemoteBudget):
            return await Dispatcher._reserve(self, task)
        expected, worst = self._costs(task)
        answer = await budget.reserve_remote(expected, worst)
        if answer == GO:
            return expected, worst
        if answer == SPENT or self.stop_status is not None:
            return False
        return None  # room held by calls in flight elsewhere: asked again shortly


def share(run: Run, shared: SharedState) -> None:
    """Fit ``run`` (built, not started) with the cluster's registry and budget."""
    old = run.dispatcher
    fields = {f.name: getattr(old, f.name) for f in dataclasses.fields(Dispatcher)}
    if shared.budget is not None:
        fields["budget"] = shared.budget
    finish = old.finish

    def finished(task: Task, source: str) -> None:
        finish(task, source)
        shared.finished(task, source)

    fields["finish"] = finished
    run.dispatcher = ClusterDispatcher(**fields, shared=shared)
    if shared.copying or shared._also is not None:
        run.planner._lookup = shared.lookup
