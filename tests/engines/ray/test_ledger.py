"""The ledger of a cluster run: billing merged from per-shard stores, runs, a directory started over."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.records import Outcome, Status, Usage
from pipeline.engines.ray.ledger import ClusterLedger, merge_billing, shard_store_path
from pipeline.output.store import ResultStore


def _bill(store: ResultStore, *, out_id: str, run_id: str, policy: str, fp: bytes, cost: float,
          server: float | None = None) -> None:
    outcome = Outcome(Status.OK, usage=Usage(prompt_tokens=100, completion_tokens=10, server_cost_usd=server),
                      cost_usd=cost, attempts=1, billed_calls=1)
    store.put(fingerprint=fp, outcome=outcome, policy=policy, out_id=out_id, run_id=run_id)


def _stores(tmp_path: Path) -> ClusterLedger:
    for index, policy in ((0, "spam"), (1, "spam"), (1, "hate")):
        store = ResultStore(shard_store_path(tmp_path, index))
        _bill(store, out_id="o", run_id="r1", policy=policy, fp=bytes([index]) + policy.encode(), cost=0.5)
        _bill(store, out_id="other", run_id="r9", policy=policy, fp=bytes([index, 9]) + policy.encode(), cost=7.0)
        store.close()
    return ClusterLedger(tmp_path)


def test_billing_of_every_shard_is_summed_per_run_and_policy(tmp_path: Path) -> None:
    billing = _stores(tmp_path).billing("o")
    assert sorted((b["policy"], b["requests"], b["prompt_tokens"], b["cost_usd"]) for b in billing) == [
        ("hate", 1, 100, 0.5), ("spam", 2, 200, 1.0)]


def test_merge_keeps_a_missing_server_cost_missing() -> None:
    rows = [{"out_id": "o", "run_id": "r", "policy": "p", "requests": 1, "cost_usd": 1.0, "server_cost_usd": None,
             "charged_usd": None},
            {"out_id": "o", "run_id": "r", "policy": "p", "requests": 2, "cost_usd": 2.0, "server_cost_usd": None,
             "charged_usd": 1.5}]
    (merged,) = merge_billing(rows)
    assert (merged["requests"], merged["cost_usd"], merged["server_cost_usd"], merged["charged_usd"]) == (
        3, 3.0, None, 1.5)


def test_runs_left_running_are_marked_killed(tmp_path: Path) -> None:
    ledger = ClusterLedger(tmp_path)
    ledger.record_run({"run_id": "a", "out_id": "o", "outcome": "running"})
    ledger.record_run({"run_id": "b", "out_id": "o", "outcome": "finished"})
    ledger.record_run({"run_id": "a", "out_id": "o", "outcome": "running", "labels": 3})  # replaced, not added
    ledger.mark_killed("o")
    assert [(r["run_id"], r["outcome"]) for r in ledger.runs("o")] == [("b", "finished"), ("a", "killed")]


def test_starting_over_forgets_billing_and_runs_but_keeps_answers(tmp_path: Path) -> None:
    ledger = _stores(tmp_path)
    ledger.record_run({"run_id": "r1", "out_id": "o", "outcome": "finished"})
    ledger.forget_output("o")
    assert ledger.billing("o") == [] and ledger.runs("o") == []
    assert len(ledger.billing("other")) == 2
    store = ResultStore(shard_store_path(tmp_path, 0))
    assert list(store.lookup([b"\x00spam"])) == [b"\x00spam"]
