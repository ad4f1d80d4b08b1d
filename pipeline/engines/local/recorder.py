"""Where each outcome of a run goes: counted, stored, and placed as a label row in its shard.

An answer from the host is counted (calls, tokens, dollars) and handed to the store; every outcome,
whatever its source, becomes a label row in its input row's shard, and the rows waiting on the same
text (duplicates) get the same label. A canary's answer is billed but kept aside: never stored,
never a label. No IO of its own: the store commits in its thread, shards are written by the caller.
"""

from __future__ import annotations

from pipeline.core.labels import label_row
from pipeline.core.records import FINAL_STATUSES, UNSENT_STATUSES, Outcome, Status
from pipeline.engines.local.worker import charged_usd
from pipeline.engines.runstate import RunSettings, RunStats
from pipeline.output.store import ResultStore
from pipeline.plan.planner import Planner, Slot, Task
from pipeline.plan.shards import ShardAssembler


class Recorder:
    """Records one run's outcomes into its stats, store and shards (called once per label)."""

    __slots__ = ("canary_answers", "planner", "settings", "shards", "stats", "store")

    def __init__(self, *, stats: RunStats, store: ResultStore, settings: RunSettings, planner: Planner,
                 shards: ShardAssembler) -> None:
        self.stats, self.store, self.settings = stats, store, settings
        self.planner, self.shards = planner, shards
        #: canary answers by canary index
        self.canary_answers: dict[int, Outcome] = {}

    def finish(self, task: Task, source: str) -> None:
        """A task is done: ``source`` is "api" for an answer from the host, else why none was needed."""
        outcome, fp = task.outcome, task.fingerprint
        canary = task.canary is not None
        if source == "api":
            stats, usage = self.stats, outcome.usage
            stats.sent += 1
            stats.billed_calls += outcome.billed_calls
            stats.tokens += usage.prompt_tokens + usage.completion_tokens
            stats.spent_usd += charged_usd(usage if outcome.billed_calls else None, outcome.cost_usd)
            # a canary's answer is billed but never stored: tomorrow's canary must ask the model again
            self.store.put(fingerprint=None if canary else fp, outcome=outcome, policy=task.slot.plan.policy.name,
                           out_id=self.settings.out_id, run_id=self.settings.run_id)
        if canary:
            self.canary_answers[task.canary] = outcome  # type: ignore[index]
            return
        waiters = self.planner.answered(fp, outcome, final=source == "api" and outcome.status in FINAL_STATUSES)
        self.place(task.slot, outcome, source, fp)
        for slot in waiters:
            self.place(slot, outcome, "duplicate", fp)

    def place(self, slot: Slot, outcome: Outcome, source: str, fp: bytes | None) -> None:
        """One label row into its shard, counted by status (and by verdict for an answer)."""
        s, plan = self.settings, slot.plan
        assert slot.shard is not None
        label = label_row(
            id=slot.row_id, policy=plan.policy.name, outcome=outcome, model=s.model, policy_version=plan.version,
            reasoning_effort=s.reasoning_effort, output_format=s.output_format, source=source, fingerprint=fp,
            row_number=slot.row_number, input_file=slot.input_file, run_id=s.run_id, kept=slot.kept,
        )
        status = outcome.status
        self.stats.labels += 1
        self.stats.statuses[status] += 1
        if outcome.verdict is not None and status is Status.OK:
            self.stats.violations[(plan.policy.name, outcome.verdict.violation)] += 1
        self.shards.place(slot.shard, slot.offset, label, unsent=status in UNSENT_STATUSES)
