"""The planner: policy plans, and a batch of rows to labels known at once plus tasks to send."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.core.records import Outcome, Policy, Status, Verdict
from pipeline.core.tokens import MESSAGE_OVERHEAD, count_tokens
from pipeline.plan.planner import Placement, Planner, PolicyPlan, Task, make_policy_plan
from pipeline.plan.prompt import fingerprint
from pipeline.plan.shards import Shard, ShardAssembler
from pipeline.readers import RowBatch

POLICY = Policy("spam", "# Spam\nSP1: scams.\n{{OUTPUT_FORMAT}}\n")


def plan(*, context_tokens: int = 131072, system_tokens: int = 450, max_tokens: int = 8192) -> PolicyPlan:
    return make_policy_plan(2, POLICY, system="rendered", key=b"k" * 16, system_tokens=system_tokens,
                     context_tokens=context_tokens, max_tokens=max_tokens)


def test_text_budget_is_context_minus_system_output_and_template_overhead() -> None:
    assert MESSAGE_OVERHEAD == 8
    assert plan().text_budget == 131072 - 450 - 8192 - 32
    assert plan(context_tokens=10_000, system_tokens=1_000, max_tokens=4_000).text_budget == 4_968


def test_text_budget_one_token_over_the_edge_and_never_negative() -> None:
    assert plan(context_tokens=1_033, system_tokens=1_000, max_tokens=0).text_budget == 1
    assert plan(context_tokens=1_032, system_tokens=1_000, max_tokens=0).text_budget == 0
    assert plan(context_tokens=1_000, system_tokens=900, max_tokens=8192).text_budget == 0


def test_make_policy_plan_keeps_what_it_was_given() -> None:
    p = plan()
    assert (p.index, p.policy, p.system, p.key, p.system_tokens) == (2, POLICY, "rendered", b"k" * 16, 450)


def test_plan_version_is_the_policy_version() -> None:
    p = plan()
    assert p.version == POLICY.version
    assert re.fullmatch(r"[0-9a-f]{12}", p.version)
    edited = make_policy_plan(0, Policy("spam", POLICY.text + "SP2: ads.\n"), system="s", key=b"", system_tokens=1,
                       context_tokens=100, max_tokens=10)
    assert edited.version != p.version


def test_explicit_version_is_kept() -> None:
    p = PolicyPlan(0, POLICY, "s", b"", 1, 10, version="given")
    assert p.version == "given"


# ---- planning a batch ----------------------------------------------------------------------------

SPAM = make_policy_plan(0, POLICY, system="spam system", key=b"s" * 16, system_tokens=20, context_tokens=131072,
                        max_tokens=100)
HATE = make_policy_plan(1, Policy("hate", "# Hate\n"), system="hate system", key=b"h" * 16, system_tokens=30,
                        context_tokens=131072, max_tokens=100)


@dataclass
class Stored:
    outcome: Outcome
    run_id: str


class Store:
    """What the result store would answer, and which fingerprints were asked for."""

    def __init__(self, answers: dict[bytes, Stored] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[list[bytes]] = []

    def __call__(self, fingerprints: list[bytes]) -> dict[bytes, Stored]:
        self.asked.append(list(fingerprints))
        return {fp: self.answers[fp] for fp in fingerprints if fp in self.answers}


def planner(*plans: PolicyPlan, store: Store | None = None, too_long: str = "skip", done: frozenset[int] = frozenset(),
            shard_rows: int = 100) -> tuple[Planner, list[Shard]]:
    completed: list[Shard] = []
    shards = ShardAssembler(shard_rows=shard_rows, is_done=lambda i: i in done, on_complete=completed.append)
    return Planner(plans=plans or (SPAM,), shards=shards, run_id="run-1", too_long=too_long, max_tokens=100,
                   lookup=store or Store()), completed


def batch(*texts: str | None, errors: list[str | None] | None = None) -> RowBatch:
    return RowBatch([f"r{i}" for i in range(len(texts))], list(texts), errors, "in.jsonl")


def statuses(placements: list[Placement]) -> list[tuple[str, Status, str]]:
    return [(p.slot.row_id, p.outcome.status, p.source) for p in placements]


def test_empty_texts_are_skipped_without_a_request() -> None:
    p, _ = planner()
    placements, tasks = p.plan(batch(None, "", "   \n\t "), 0)
    assert tasks == []
    assert statuses(placements) == [("r0", Status.SKIPPED_EMPTY, "none"), ("r1", Status.SKIPPED_EMPTY, "none"),
                                    ("r2", Status.SKIPPED_EMPTY, "none")]
    assert all(pl.fingerprint is None for pl in placements)


def test_an_unreadable_row_is_an_input_error_for_every_policy() -> None:
    p, _ = planner(SPAM, HATE)
    placements, tasks = p.plan(batch(None, "fine", errors=["in.jsonl line 1: not valid JSON", None]), 0)
    assert statuses(placements) == [("r0", Status.INPUT_ERROR, "none")] * 2
    assert {pl.outcome.error for pl in placements} == {"in.jsonl line 1: not valid JSON"}
    assert [t.slot.plan.policy.name for t in tasks] == ["spam", "hate"]


def test_a_task_carries_the_normalised_text_its_fingerprint_and_estimates() -> None:
    p, _ = planner()
    placements, tasks = p.plan(batch("  hello <|start|> there \r\n"), 7)
    assert placements == []
    (task,) = tasks
    assert isinstance(task, Task)
    assert "<|start|>" not in task.user and task.user.startswith("hello") and task.user.endswith("there")
    assert task.fingerprint == fingerprint(SPAM.key, task.user)
    assert task.prompt_tokens >= SPAM.system_tokens + count_tokens(task.user)
    assert task.retry.max_tokens == 100 and task.retry.attempts == 0
    assert (task.slot.row_id, task.slot.row_number, task.slot.input_file, task.slot.offset) == ("r0", 7, "in.jsonl", 0)


def test_every_policy_gets_its_own_slot_in_the_rows_shard() -> None:
    p, _ = planner(SPAM, HATE)
    _, tasks = p.plan(batch("one", "two"), 0)
    assert [(t.slot.row_id, t.slot.plan.index, t.slot.offset) for t in tasks] == [
        ("r0", 0, 0), ("r0", 1, 1), ("r1", 0, 2), ("r1", 1, 3)]
    assert tasks[0].fingerprint != tasks[1].fingerprint  # same text, other policy
    assert tasks[0].slot.shard.pending == 4


def test_too_long_is_skipped_when_so_configured() -> None:
    small = make_policy_plan(0, POLICY, system="s", key=b"k" * 16, system_tokens=10, context_tokens=10 + 32 + 5,
                             max_tokens=0)
    assert small.text_budget == 5
    p, _ = planner(small)
    placements, tasks = p.plan(batch("a b c d e f g h i j k l", "short"), 0)
    assert statuses(placements) == [("r0", Status.TOO_LONG, "none")]
    assert placements[0].outcome.error == "content over 5 tokens"
    assert [t.user for t in tasks] == ["short"]


def test_too_long_is_truncated_to_the_budget_when_so_configured() -> None:
    small = make_policy_plan(0, POLICY, system="s", key=b"k" * 16, system_tokens=10, context_tokens=10 + 32 + 5,
                             max_tokens=0)
    p, _ = planner(small, too_long="truncate")
    placements, tasks = p.plan(batch("a b c d e f g h i j k l"), 0)
    assert placements == []
    assert count_tokens(tasks[0].user) <= 5 and "a b c d e f g h i j k l".startswith(tasks[0].user)


def test_the_same_text_twice_is_sent_once_and_the_second_waits_for_its_answer() -> None:
    store = Store()
    p, _ = planner(store=store)
    placements, tasks = p.plan(batch("buy now", " buy now ", "other"), 0)
    assert placements == []
    assert [t.user for t in tasks] == ["buy now", "other"]
    fp = tasks[0].fingerprint
    assert len(store.asked) == 1 and store.asked[0].count(fp) == 2  # asked before deduplication
    waiters = p.answered(fp, Outcome(Status.OK, verdict=Verdict(1)), final=True)
    assert [s.row_id for s in waiters] == ["r1"]
    assert p.duplicates == 1


def test_a_text_in_flight_from_an_earlier_batch_is_not_sent_again() -> None:
    store = Store()
    p, _ = planner(store=store)
    _, first = p.plan(batch("buy now"), 0)
    placements, tasks = p.plan(batch("buy now"), 1)
    assert (placements, tasks) == ([], [])
    assert store.asked == [[first[0].fingerprint]]  # the second batch did not even ask the store
    assert [s.row_number for s in p.answered(first[0].fingerprint, Outcome(Status.OK), final=True)] == [1]


def test_a_recent_final_answer_serves_later_rows_as_duplicates() -> None:
    p, _ = planner()
    _, (task,) = p.plan(batch("buy now"), 0)
    answer = Outcome(Status.OK, verdict=Verdict(1))
    p.answered(task.fingerprint, answer, final=True)
    placements, tasks = p.plan(batch("buy now"), 1)
    assert tasks == []
    assert statuses(placements) == [("r0", Status.OK, "duplicate")]
    assert placements[0].outcome is answer and placements[0].fingerprint == task.fingerprint
    assert p.duplicates == 1


def test_an_answer_that_is_not_final_is_asked_for_again() -> None:
    p, _ = planner()
    _, (task,) = p.plan(batch("buy now"), 0)
    p.answered(task.fingerprint, Outcome(Status.FAILED), final=False)
    placements, tasks = p.plan(batch("buy now"), 1)
    assert placements == [] and [t.fingerprint for t in tasks] == [task.fingerprint]


def test_committed_answers_are_served_by_the_store_from_then_on() -> None:
    store = Store()
    p, _ = planner(store=store)
    _, (task,) = p.plan(batch("buy now"), 0)
    answer = Outcome(Status.OK, verdict=Verdict(0))
    p.answered(task.fingerprint, answer, final=True)
    p.committed([task.fingerprint])
    assert p.recent == {}
    store.answers[task.fingerprint] = Stored(answer, "run-1")
    placements, tasks = p.plan(batch("buy now"), 1)
    assert tasks == [] and statuses(placements) == [("r0", Status.OK, "duplicate")]  # this run's answer
    assert (p.duplicates, p.store_hits) == (1, 0)


def test_an_answer_from_an_earlier_run_is_a_store_hit() -> None:
    fp = fingerprint(SPAM.key, "buy now")
    store = Store({fp: Stored(Outcome(Status.OK, verdict=Verdict(1)), "run-0")})
    p, _ = planner(store=store)
    placements, tasks = p.plan(batch("buy now", "new text"), 0)
    assert statuses(placements) == [("r0", Status.OK, "store")]
    assert placements[0].fingerprint == fp
    assert [t.user for t in tasks] == ["new text"]
    assert (p.store_hits, p.duplicates) == (1, 0)


def test_rows_of_a_shard_completed_earlier_are_skipped() -> None:
    p, _ = planner(done=frozenset({0}), shard_rows=2)
    placements, tasks = p.plan(batch("a", "b", "c"), 0)
    assert placements == []
    assert [(t.user, t.slot.row_number, t.slot.shard.index) for t in tasks] == [("c", 2, 1)]


def test_rows_outside_the_sample_get_no_label_but_count_as_shard_rows() -> None:
    p, _ = planner(SPAM, HATE)
    p.sample = lambda n: n % 2 == 0
    placements, tasks = p.plan(batch("a", "b", "c", "d"), 10)
    assert placements == []
    assert [(t.slot.row_number, t.slot.plan.policy.name) for t in tasks] == [
        (10, "spam"), (10, "hate"), (12, "spam"), (12, "hate")]
    shard = tasks[0].slot.shard
    assert shard is not None and (shard.rows, shard.pending) == (4, 4)


def test_kept_values_ride_on_every_slot_of_their_row() -> None:
    p, _ = planner(SPAM, HATE)
    rows = RowBatch(["r0", "r1"], ["a", None], None, "in.jsonl", kept=[[1, 0], ["de", "fr"]])
    placements, tasks = p.plan(rows, 0)
    assert {t.slot.kept for t in tasks} == {(1, "de")}
    assert {pl.slot.kept for pl in placements} == {(0, "fr")}


def test_a_canary_task_is_never_deduplicated_with_rows_nor_looked_up() -> None:
    store = Store()
    p, _ = planner(SPAM, store=store)
    _, tasks = p.plan(batch("buy now"), 0)
    canary = p.canary_task(3, SPAM, "buy now")
    assert canary.canary == 3 and canary.slot.shard is None
    assert canary.fingerprint == tasks[0].fingerprint  # same request, but it stays out of the planner's books
    assert canary.fingerprint in p.inflight and p.inflight[canary.fingerprint] == []
    assert store.asked == [[tasks[0].fingerprint]]
