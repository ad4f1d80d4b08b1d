"""The recorder: an answer is counted, stored and placed as a label row, with the rows waiting on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.labels import LABEL_SCHEMA
from pipeline.core.records import Outcome, Policy, Status, Usage, Verdict
from pipeline.engines.local.recorder import Recorder
from pipeline.engines.runstate import RunSettings, RunStats
from pipeline.output.store import ResultStore
from pipeline.plan.planner import Planner, Task, make_policy_plan
from pipeline.plan.shards import Shard, ShardAssembler
from pipeline.readers import RowBatch

SPAM = make_policy_plan(0, Policy("spam", "# Spam\nSP1: scams.\n{{OUTPUT_FORMAT}}\n"), system="spam system",
                        key=b"s" * 16, system_tokens=20, context_tokens=131072, max_tokens=100)
SETTINGS = RunSettings(out_id="out-1", run_id="run-1", model="m", reasoning_effort="low", output_format="binary",
                       concurrency=1, too_long="skip", max_tokens=100, keep_reasoning=False, grace_seconds=1.0,
                       shard_rows=10)
SOURCE, STATUS = LABEL_SCHEMA.names.index("source"), LABEL_SCHEMA.names.index("status")


class Parts:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.sqlite"
        self.completed: list[Shard] = []
        self.shards = ShardAssembler(shard_rows=10, is_done=lambda i: False, on_complete=self.completed.append)
        self.store = ResultStore(self.path)
        self.planner = Planner(plans=[SPAM], shards=self.shards, run_id="run-1", too_long="skip", max_tokens=100,
                               lookup=self.store.lookup)
        self.stats = RunStats()
        self.recorder = Recorder(stats=self.stats, store=self.store, settings=SETTINGS, planner=self.planner,
                                 shards=self.shards)

    def tasks(self, *texts: str) -> list[Task]:
        batch = RowBatch([f"r{i}" for i in range(len(texts))], list(texts), None, "in.jsonl")
        placements, tasks = self.planner.plan(batch, 0)
        assert placements == []
        return tasks


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    return Parts(tmp_path)


def answer(violation: int, *, cost: float = 0.001) -> Outcome:
    return Outcome(Status.OK, Verdict(violation), Usage(prompt_tokens=100, completion_tokens=20), cost_usd=cost,
                   attempts=1, billed_calls=1)


def test_an_answer_is_counted_stored_and_placed_for_every_row_waiting_on_it(parts: Parts) -> None:
    same, other = parts.tasks("buy now", "buy now", "hello")  # the second "buy now" waits on the first
    same.outcome = answer(1)
    parts.recorder.finish(same, "api")
    assert (parts.stats.sent, parts.stats.billed_calls, parts.stats.tokens) == (1, 1, 120)
    assert parts.stats.spent_usd == pytest.approx(0.001)
    assert parts.stats.labels == 2 and parts.stats.violations[("spam", 1)] == 2
    other.outcome = answer(0)
    parts.recorder.finish(other, "api")
    parts.shards.close_all()
    (shard,) = parts.completed
    assert [(label[SOURCE], label[STATUS]) for label in shard.labels] == [("api", "ok"), ("duplicate", "ok"),
                                                                          ("api", "ok")]
    parts.store.close()
    assert ResultStore(parts.path).lookup([same.fingerprint])[same.fingerprint].outcome.verdict == Verdict(1)


def test_an_outcome_not_from_the_host_is_placed_but_neither_counted_as_sent_nor_stored(parts: Parts) -> None:
    (task,) = parts.tasks("hello")
    task.outcome = Outcome(Status.FAILED, error="no answer")
    parts.recorder.finish(task, "none")
    assert (parts.stats.sent, parts.stats.labels, parts.stats.statuses[Status.FAILED]) == (0, 1, 1)
    assert parts.stats.violations == {}
    parts.store.close()
    assert ResultStore(parts.path).billing("out-1") == []


def test_a_label_of_a_row_never_sent_marks_its_shard_for_rewriting(parts: Parts) -> None:
    (task,) = parts.tasks("hello")
    parts.recorder.place(task.slot, Outcome(Status.INTERRUPTED), "none", None)
    assert task.slot.shard is not None and task.slot.shard.unsent == 1
    assert parts.stats.statuses[Status.INTERRUPTED] == 1


def test_a_canary_answer_is_billed_and_kept_aside_but_never_stored_or_placed(parts: Parts) -> None:
    canary = parts.planner.canary_task(3, SPAM, "known spam")
    canary.outcome = answer(1)
    parts.recorder.finish(canary, "api")
    assert parts.recorder.canary_answers == {3: canary.outcome}
    assert (parts.stats.sent, parts.stats.labels) == (1, 0)
    parts.store.close()
    store = ResultStore(parts.path)
    assert store.lookup([canary.fingerprint]) == {}
    assert [bill["requests"] for bill in store.billing("out-1")] == [1]
