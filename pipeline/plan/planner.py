"""The planner: turns a batch of input rows into labels known at once and requests to send.

For every (row, policy) pair: an unreadable row is an ``input_error``, an empty text is
``skipped_empty``, a text over the context budget is ``too_long`` (or truncated when so
configured); anything else gets a fingerprint and is served, in order of preference, from an
answer this run already has, from an identical request already in flight (it waits for that
answer), from the result store, or becomes a `Task` to send. No IO beyond the store lookup that
is passed in. With a sample (`pipeline.quality.sampling`), rows outside it take no label: their shard
counts them as input rows all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.core.records import Outcome, Policy, Status
from pipeline.core.tokens import MESSAGE_OVERHEAD, fits, prompt_estimate, truncate
from pipeline.plan.prompt import fingerprint, neutralise, normalise
from pipeline.plan.shards import Shard, ShardAssembler
from pipeline.ratecontrol import RetryState
from pipeline.readers import RowBatch

__all__ = ["Placement", "Planner", "PolicyPlan", "Slot", "Task", "make_policy_plan"]


@dataclass(slots=True)
class PolicyPlan:
    """A policy as the run sends it: rendered system message and its fingerprint key."""

    index: int
    policy: Policy
    system: str
    key: bytes
    #: the system message's tokens, its message overhead included
    system_tokens: int
    #: most tokens the content may have (context - system - output budget - template overhead)
    text_budget: int
    #: the policy's version, hashed once (it goes on every label)
    version: str = ""

    def __post_init__(self) -> None:
        self.version = self.version or self.policy.version


def make_policy_plan(index: int, policy: Policy, *, system: str, key: bytes, system_tokens: int,
                     context_tokens: int, max_tokens: int) -> PolicyPlan:
    budget = context_tokens - system_tokens - max_tokens - 4 * MESSAGE_OVERHEAD
    return PolicyPlan(index, policy, system, key, system_tokens, max(budget, 0))


@dataclass(slots=True)
class Slot:
    """Where one label goes (no shard for a canary: its answer goes to the canary report)."""

    shard: Shard | None
    offset: int
    row_id: str
    row_number: int
    input_file: str
    plan: PolicyPlan
    #: the row's kept input values (``--keep-columns``), shared by its labels
    kept: tuple | None = None


@dataclass(slots=True)
class Task:
    """One request to send, with what its attempts have come to so far."""

    fingerprint: bytes
    user: str
    slot: Slot
    prompt_tokens: int
    retry: RetryState
    outcome: Outcome = field(default_factory=lambda: Outcome(Status.FAILED))
    #: the (expected, worst) budget reservation kept while the host prepares a queued answer
    reserved: tuple[float, float] | None = None
    #: the canary's index for a canary request (never deduplicated nor stored), else None
    canary: int | None = None


@dataclass(slots=True)
class Placement:
    """A label known without a call (or from another call): where it goes and where it came from."""

    slot: Slot
    outcome: Outcome
    source: str  # "none", "store", "duplicate"
    fingerprint: bytes | None = None


class StoredAnswer(Protocol):
    """What the result store returns for a fingerprint."""

    outcome: Outcome
    run_id: str


class Planner:
    def __init__(self, *, plans: Sequence[PolicyPlan], shards: ShardAssembler, run_id: str, too_long: str,
                 max_tokens: int, lookup: Callable[[list[bytes]], Mapping[bytes, StoredAnswer]],
                 sample: Callable[[int], bool] | None = None) -> None:
        self.plans = plans
        self.shards = shards
        self.run_id = run_id
        self.too_long = too_long
        self.max_tokens = max_tokens
        self._lookup = lookup
        #: whether an input row (by number) is in the sample; None: every row is
        self.sample = sample
        #: fingerprint -> slots waiting for the answer of the request in flight
        self.inflight: dict[bytes, list[Slot]] = {}
        #: answers of this run not yet committed to the store (the store serves the rest)
        self.recent: dict[bytes, Outcome] = {}
        self.duplicates = 0
        self.store_hits = 0

    def plan(self, batch: RowBatch, first_row: int) -> tuple[list[Placement], list[Task]]:
        placements: list[Placement] = []
        candidates: list[Task] = []
        n_policies = len(self.plans)
        errors = batch.errors
        sample = self.sample
        for i, (row_id, text) in enumerate(zip(batch.ids, batch.texts, strict=True)):
            shard = self.shards.shard_for(first_row + i)
            if shard is None:  # an earlier run completed this row's shard
                continue
            if sample is not None and not sample(first_row + i):
                self.shards.reserve(shard, 0)
                continue
            base = self.shards.reserve(shard, n_policies)
            error = errors[i] if errors is not None else None
            user = None if error or text is None else neutralise(normalise(text))
            kept = tuple(column[i] for column in batch.kept) if batch.kept else None
            for plan in self.plans:
                slot = Slot(shard, base + plan.index, row_id, first_row + i, batch.source, plan, kept)
                if error is not None:
                    placements.append(Placement(slot, Outcome(Status.INPUT_ERROR, error=error), "none"))
                elif not user:
                    placements.append(Placement(slot, Outcome(Status.SKIPPED_EMPTY), "none"))
                elif (task := self._task(slot, user, placements)) is not None:
                    candidates.append(task)
        return placements, self._dedupe(candidates, placements)

    def canary_task(self, index: int, plan: PolicyPlan, text: str) -> Task:
        """A canary's request: sent as a row's would be, never served from the store or another row."""
        user = neutralise(normalise(text))
        if not fits(user, plan.text_budget):
            user = truncate(user, plan.text_budget)
        slot = Slot(None, 0, f"canary:{index}", -1, "", plan)
        return Task(fingerprint(plan.key, user), user, slot, prompt_estimate(plan.system_tokens, user),
                    RetryState(max_tokens=self.max_tokens), canary=index)

    def _task(self, slot: Slot, user: str, placements: list[Placement]) -> Task | None:
        plan = slot.plan
        if not fits(user, plan.text_budget):
            if self.too_long == "skip":
                outcome = Outcome(Status.TOO_LONG, error=f"content over {plan.text_budget} tokens")
                placements.append(Placement(slot, outcome, "none"))
                return None
            user = truncate(user, plan.text_budget)
        return Task(fingerprint(plan.key, user), user, slot, prompt_estimate(plan.system_tokens, user),
                    RetryState(max_tokens=self.max_tokens))

    def _dedupe(self, candidates: list[Task], placements: list[Placement]) -> list[Task]:
        """Serve what is known (this run or the store); one task per new fingerprint."""
        inflight, recent = self.inflight, self.recent
        unknown = [t.fingerprint for t in candidates if t.fingerprint not in recent and t.fingerprint not in inflight]
        stored = self._lookup(unknown) if unknown else {}
        tasks: list[Task] = []
        for task in candidates:
            fp = task.fingerprint
            if fp in recent:
                self.duplicates += 1
                placements.append(Placement(task.slot, recent[fp], "duplicate", fp))
            elif fp in inflight:
                inflight[fp].append(task.slot)
            elif (hit := stored.get(fp)) is not None:
                same_run = hit.run_id == self.run_id
                self.duplicates += same_run
                self.store_hits += not same_run
                placements.append(Placement(task.slot, hit.outcome, "duplicate" if same_run else "store", fp))
            else:
                inflight[fp] = []
                tasks.append(task)
        return tasks

    def answered(self, fp: bytes, outcome: Outcome, *, final: bool) -> list[Slot]:
        """The request for ``fp`` ended: remember a final answer; the slots that waited for it."""
        if final:
            self.recent[fp] = outcome
        waiters = self.inflight.pop(fp, None) or []
        self.duplicates += len(waiters)
        return waiters

    def committed(self, fingerprints: list[bytes]) -> None:
        """The store holds these now: it serves them from here on."""
        recent = self.recent
        for fp in fingerprints:
            recent.pop(fp, None)
