from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from pipeline.core.records import Outcome, Status, Usage, Verdict
from pipeline.output.store import NullStore, ResultStore, StoreError

FP1 = bytes(range(16))
FP2 = bytes(range(1, 17))


def ok_outcome(**changes: object) -> Outcome:
    fields: dict[str, object] = {
        "status": Status.OK,
        "verdict": Verdict(1, "SP2", ("SP1", "SP2"), "high", "Advertises a scam."),
        "usage": Usage(prompt_tokens=900, cached_prompt_tokens=512, completion_tokens=120, reasoning_tokens=100),
        "cost_usd": 0.0001,
        "latency_ms": 812.5,
        "attempts": 2,
        "billed_calls": 1,
        "finish_reason": "stop",
        "served_model": "gpt-oss-safeguard-20b",
    }
    fields.update(changes)
    return Outcome(**fields)  # type: ignore[arg-type]


def failed_outcome(*, billed_calls: int = 0, usage: Usage | None = None, cost: float = 0.0) -> Outcome:
    return Outcome(Status.FAILED, usage=usage or Usage(), cost_usd=cost, attempts=6, billed_calls=billed_calls,
                   error="server closed the connection")


def write(path: Path, items: list[tuple[bytes | None, Outcome]], *, policy: str = "spam", out_id: str = "out1",
          run_id: str = "run1") -> None:
    store = ResultStore(path)
    store.start()
    for fp, outcome in items:
        store.put(fingerprint=fp, outcome=outcome, policy=policy, out_id=out_id, run_id=run_id)
    store.close()


# ---- results -------------------------------------------------------------------------------------


def test_a_result_is_found_by_fingerprint_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    outcome = ok_outcome(raw_output=None, reasoning="because")
    write(path, [(FP1, outcome)])
    found = ResultStore(path).lookup([FP1, FP2])
    assert list(found) == [FP1]
    stored = found[FP1]
    assert stored.run_id == "run1"
    assert stored.outcome == outcome


def test_verdict_and_usage_fields_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    usage = Usage(prompt_tokens=7, cached_prompt_tokens=3, completion_tokens=11, reasoning_tokens=5, estimated=True)
    write(path, [(FP1, ok_outcome(usage=usage, verdict=Verdict(0)))])
    stored = ResultStore(path).lookup([FP1])[FP1].outcome
    assert stored.usage == usage
    assert stored.verdict == Verdict(0, None, (), None, None)
    assert (stored.latency_ms, stored.attempts, stored.billed_calls) == (812.5, 2, 1)
    assert stored.served_model == "gpt-oss-safeguard-20b"


@pytest.mark.parametrize("status", [Status.OK, Status.INVALID_OUTPUT, Status.TRUNCATED, Status.REJECTED])
def test_final_statuses_are_kept(tmp_path: Path, status: Status) -> None:
    path = tmp_path / "store.sqlite"
    verdict = Verdict(0) if status is Status.OK else None
    write(path, [(FP1, ok_outcome(status=status, verdict=verdict, raw_output="junk"))])
    stored = ResultStore(path).lookup([FP1])[FP1].outcome
    assert stored.status is status
    assert stored.raw_output == "junk"


@pytest.mark.parametrize(
    "status",
    [Status.FAILED, Status.SKIPPED_EMPTY, Status.TOO_LONG, Status.INPUT_ERROR, Status.BUDGET_EXHAUSTED,
     Status.INTERRUPTED, Status.ABORTED],
)
def test_other_statuses_are_not_kept_as_results(tmp_path: Path, status: Status) -> None:
    path = tmp_path / "store.sqlite"
    write(path, [(FP1, Outcome(status, billed_calls=0))])
    assert ResultStore(path).lookup([FP1]) == {}


def test_outcome_without_fingerprint_is_billed_but_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    write(path, [(None, ok_outcome())])
    store = ResultStore(path)
    assert store.lookup([FP1]) == {}
    assert store.billing("out1")[0]["requests"] == 1


def test_a_newer_result_replaces_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    write(path, [(FP1, ok_outcome(verdict=Verdict(1)))])
    write(path, [(FP1, ok_outcome(verdict=Verdict(0)))], run_id="run2")
    found = ResultStore(path).lookup([FP1])[FP1]
    assert found.outcome.verdict == Verdict(0)
    assert found.run_id == "run2"


def test_lookup_of_many_fingerprints(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    fingerprints = [i.to_bytes(16, "big") for i in range(1200)]
    write(path, [(fp, ok_outcome()) for fp in fingerprints[::2]])
    found = ResultStore(path).lookup(fingerprints)
    assert set(found) == set(fingerprints[::2])


# ---- billing -------------------------------------------------------------------------------------


def test_billing_counts_every_billed_outcome_even_failed_ones(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    junk = Outcome(Status.INVALID_OUTPUT, usage=Usage(prompt_tokens=100, completion_tokens=50), cost_usd=0.5,
                   billed_calls=3, raw_output="junk")
    failed = failed_outcome(billed_calls=2, usage=Usage(prompt_tokens=10, completion_tokens=20), cost=0.25)
    unbilled = failed_outcome(billed_calls=0)
    write(path, [(FP1, ok_outcome()), (FP2, junk), (None, failed), (None, unbilled)])
    [bill] = ResultStore(path).billing("out1")
    assert bill["requests"] == 1 + 3 + 2
    assert bill["prompt_tokens"] == 900 + 100 + 10
    assert bill["cached_prompt_tokens"] == 512
    assert bill["completion_tokens"] == 120 + 50 + 20
    assert bill["reasoning_tokens"] == 100
    assert bill["cost_usd"] == pytest.approx(0.0001 + 0.5 + 0.25)
    assert bill["estimated_requests"] == 0
    assert bill["server_cost_usd"] is None


def test_billing_sums_per_output_run_and_policy(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    one = ok_outcome(cost_usd=1.0)
    write(path, [(FP1, one), (FP2, one)], policy="spam", run_id="r1")
    write(path, [(FP1, one)], policy="spam", run_id="r1")  # a later batch adds up
    write(path, [(FP1, one)], policy="hate", run_id="r1")
    write(path, [(FP1, one)], policy="spam", run_id="r2")
    write(path, [(FP1, one)], policy="spam", run_id="r1", out_id="other")
    store = ResultStore(path)
    rows = {(b["run_id"], b["policy"]): b for b in store.billing("out1")}
    assert set(rows) == {("r1", "spam"), ("r1", "hate"), ("r2", "spam")}
    assert rows[("r1", "spam")]["requests"] == 3
    assert rows[("r1", "spam")]["cost_usd"] == pytest.approx(3.0)
    assert rows[("r1", "spam")]["prompt_tokens"] == 3 * 900
    assert rows[("r1", "hate")]["requests"] == 1
    assert rows[("r2", "spam")]["requests"] == 1
    assert [b["requests"] for b in store.billing("other")] == [1]
    assert store.billing("nobody") == []


def test_billing_counts_estimated_requests_and_server_cost(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    estimated = ok_outcome(usage=Usage(prompt_tokens=5, completion_tokens=5, estimated=True), billed_calls=2)
    priced = ok_outcome(usage=Usage(prompt_tokens=5, server_cost_usd=0.002))
    write(path, [(FP1, estimated)])
    write(path, [(FP2, priced)])
    write(path, [(None, priced)])
    [bill] = ResultStore(path).billing("out1")
    assert bill["requests"] == 4
    assert bill["estimated_requests"] == 2
    assert bill["server_cost_usd"] == pytest.approx(0.004)


# ---- runs ----------------------------------------------------------------------------------------


def test_record_run_inserts_then_updates(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path)
    store.start()
    store.record_run({"run_id": "r1", "out_id": "out1", "started_at": 10.0, "outcome": "running"})
    store.record_run({"run_id": "r1", "out_id": "out1", "ended_at": 20.0, "outcome": "ok", "labels": 40})
    store.record_run({"run_id": "r0", "out_id": "out1", "started_at": 5.0, "outcome": "interrupted"})
    store.close()
    runs = ResultStore(path).runs("out1")
    assert [r["run_id"] for r in runs] == ["r0", "r1"]  # by start time
    r1 = runs[1]
    assert (r1["started_at"], r1["ended_at"], r1["outcome"], r1["labels"]) == (10.0, 20.0, "ok", 40)


def test_forget_output_drops_ledger_but_keeps_results(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path)
    store.start()
    store.put(fingerprint=FP1, outcome=ok_outcome(), policy="spam", out_id="out1", run_id="r1")
    store.put(fingerprint=FP2, outcome=ok_outcome(), policy="spam", out_id="out2", run_id="r2")
    store.record_run({"run_id": "r1", "out_id": "out1", "started_at": 1.0})
    store.record_run({"run_id": "r2", "out_id": "out2", "started_at": 1.0})
    store.close()
    store = ResultStore(path)
    store.forget_output("out1")
    assert store.billing("out1") == [] and store.runs("out1") == []
    assert len(store.billing("out2")) == 1 and len(store.runs("out2")) == 1
    assert set(store.lookup([FP1, FP2])) == {FP1, FP2}


# ---- writer thread, NullStore, file ---------------------------------------------------------------


def test_on_commit_gets_the_fingerprints_of_stored_results(tmp_path: Path) -> None:
    committed: list[bytes] = []
    threads: set[str] = set()

    def on_commit(fingerprints: list[bytes]) -> None:
        threads.add(threading.current_thread().name)
        committed.extend(fingerprints)

    store = ResultStore(tmp_path / "store.sqlite")
    store.start(on_commit=on_commit)
    store.put(fingerprint=FP1, outcome=ok_outcome(), policy="spam", out_id="o", run_id="r")
    store.put(fingerprint=None, outcome=ok_outcome(), policy="spam", out_id="o", run_id="r")
    store.put(fingerprint=FP2, outcome=failed_outcome(billed_calls=1), policy="spam", out_id="o", run_id="r")
    store.close()
    assert committed == [FP1]  # failed and fingerprint-less outcomes are not results
    assert threads == {"result-store"}


def test_close_commits_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    fingerprints = [i.to_bytes(16, "big") for i in range(300)]
    write(path, [(fp, ok_outcome()) for fp in fingerprints])
    store = ResultStore(path)
    assert len(store.lookup(fingerprints)) == 300
    assert store.billing("out1")[0]["requests"] == 300


def test_null_store_keeps_billing_but_no_results() -> None:
    store = NullStore()
    assert store.keeps_results is False
    store.start()
    store.put(fingerprint=FP1, outcome=ok_outcome(cost_usd=0.5), policy="spam", out_id="o", run_id="r")
    store.record_run({"run_id": "r", "out_id": "o", "started_at": 1.0})
    store.close()
    assert store.lookup([FP1]) == {}
    assert store._read.execute("SELECT COUNT(*) FROM results").fetchone() == (0,)
    [bill] = store.billing("o")
    assert (bill["requests"], bill["cost_usd"]) == (1, 0.5)
    assert [r["run_id"] for r in store.runs("o")] == ["r"]


def test_null_store_writes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = NullStore()
    store.start()
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_wal_mode_is_on(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    ResultStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_store_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.sqlite"
    ResultStore(path)
    assert path.is_file()


def test_unopenable_store_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    path.mkdir()  # a directory where the file should be
    with pytest.raises(StoreError) as info:
        ResultStore(path)
    assert str(path) in str(info.value)


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    path.write_bytes(b"this is not an SQLite file" * 100)
    with pytest.raises(StoreError, match="cannot open result store"):
        ResultStore(path)


def test_close_commits_what_was_queued_before_start(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path)
    store.record_run({"run_id": "r1", "out_id": "out1", "started_at": 1.0})
    store.put(fingerprint=FP1, outcome=ok_outcome(), policy="spam", out_id="out1", run_id="r1")
    store.close()
    reopened = ResultStore(path)
    assert list(reopened.lookup([FP1])) == [FP1]
    assert [r["run_id"] for r in reopened.runs("out1")] == ["r1"]


def test_a_closed_store_can_be_written_again(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path)
    store.start()
    store.record_run({"run_id": "r1", "out_id": "out1", "started_at": 1.0, "outcome": "running"})
    store.close()
    store.record_run({"run_id": "r1", "out_id": "out1", "ended_at": 2.0, "outcome": "ok"})
    store.close()
    [run] = ResultStore(path).runs("out1")
    assert (run["outcome"], run["ended_at"]) == ("ok", 2.0)


def test_a_failed_write_surfaces_at_close(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path)
    store.start()
    store.record_run({"run_id": "r1", "out_id": "out1", "no_such_column": 1})
    with pytest.raises(StoreError) as info:
        store.close()
    assert str(path) in str(info.value) and "cannot write" in str(info.value)


# ---- a store written by an older version ---------------------------------------------------------

#: the results table as the store created it before `provider` and `server_cost_usd` were stored
OLD_RESULTS = """
CREATE TABLE results (
    fingerprint BLOB PRIMARY KEY,
    status TEXT NOT NULL,
    violation INTEGER, category TEXT, rule_ids TEXT, confidence TEXT, rationale TEXT,
    prompt_tokens INTEGER, cached_prompt_tokens INTEGER, completion_tokens INTEGER,
    reasoning_tokens INTEGER, usage_estimated INTEGER, cost_usd REAL,
    latency_ms REAL, attempts INTEGER, billed_calls INTEGER, finish_reason TEXT, error TEXT,
    raw_output TEXT, reasoning TEXT, served_model TEXT, run_id TEXT, created_at REAL
) WITHOUT ROWID;
"""


def old_store(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(OLD_RESULTS)
    conn.execute(
        "INSERT INTO results VALUES (?, 'ok', 1, 'SP2', '[\"SP1\",\"SP2\"]', 'high', 'Advertises a scam.', 900, 512, "
        "120, 100, 0, 0.0001, 812.5, 2, 1, 'stop', NULL, NULL, 'because', 'gpt-oss-safeguard-20b', 'old-run', 1.0)",
        (FP1,))
    conn.execute(
        "INSERT INTO results VALUES (?, 'rejected', NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0.0, 3.0, 1, 0, "
        "NULL, 'HTTP 400: too big', NULL, NULL, NULL, 'old-run', 1.0)", (FP2,))
    conn.commit()
    conn.close()


def test_an_old_results_table_gains_the_new_columns_and_its_rows_still_read(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    old_store(path)
    store = ResultStore(path)
    found = store.lookup([FP1, FP2])
    assert found[FP1].run_id == "old-run"
    assert found[FP1].outcome == ok_outcome(reasoning="because")
    assert found[FP1].outcome.provider is None and found[FP1].outcome.usage.server_cost_usd is None
    assert found[FP2].outcome == Outcome(Status.REJECTED, latency_ms=3.0, attempts=1, error="HTTP 400: too big")
    store.close()
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    assert {"provider", "server_cost_usd"} <= columns


def test_an_upgraded_store_takes_new_answers_with_every_column(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    old_store(path)
    fp3 = bytes(range(2, 18))
    outcome = ok_outcome(provider="Groq", usage=Usage(prompt_tokens=10, completion_tokens=2, server_cost_usd=1e-6))
    write(path, [(fp3, outcome)])
    write(path, [])  # opening it again adds nothing twice
    found = ResultStore(path).lookup([FP1, fp3])
    assert found[fp3].outcome == outcome
    assert found[FP1].outcome == ok_outcome(reasoning="because")


# ---- violation rates (drift) ---------------------------------------------------------------------

def test_rates_give_the_directorys_last_run_and_earlier_runs_of_any_directory(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite")
    store.start()
    store.record_rates(run_id="a", out_id="night1", ended_at=100.0, counts={"spam": (50, 5), "hate": (0, 0)})
    store.record_rates(run_id="b", out_id="night2", ended_at=200.0, counts={"spam": (40, 8)})
    store.record_rates(run_id="c", out_id="night3", ended_at=300.0, counts={"spam": (30, 30)})
    store.record_rates(run_id="d", out_id="night4", ended_at=400.0, counts={"spam": (10, 0)})
    store.close()
    current, history = store.rates("night3", history=5)
    assert current == {"spam": (30, 30)}
    assert history == [{"spam": (40, 8)}, {"spam": (50, 5)}]  # newest first, later runs left out
    assert store.rates("night3", history=1)[1] == [{"spam": (40, 8)}]
    assert store.rates("unknown", history=5) == ({}, [])
    store.forget_output("night1")
    assert store.rates("night3", history=5)[1] == [{"spam": (40, 8)}]


def test_rates_count_each_directory_once_whatever_its_runs(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite")
    store.start()
    store.record_rates(run_id="a1", out_id="night1", ended_at=100.0, counts={"spam": (20, 5)})  # budget stop
    store.record_rates(run_id="a2", out_id="night1", ended_at=150.0, counts={"spam": (60, 15)})  # resumed
    store.record_rates(run_id="b", out_id="night2", ended_at=200.0, counts={"spam": (80, 80)})
    store.close()
    current, history = store.rates("night2", history=5)
    assert current == {"spam": (80, 80)} and history == [{"spam": (80, 20)}]
    store.settle_rates("night1", {"spam": (80, 19), "hate": (0, 0)})  # the shards' own counts win
    assert store.rates("night2", history=5)[1] == [{"spam": (80, 19)}]
    assert store.rates("night1", history=5) == ({"spam": (80, 19)}, [])  # night2 ended after it
    store.settle_rates("never-ran", {"spam": (5, 1)})
    assert store.rates("never-ran", history=5) == ({}, [])


def test_a_canary_answer_is_billed_but_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    write(path, [(None, ok_outcome())])
    store = ResultStore(path)
    assert store.billing("out1")[0]["requests"] == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


def test_a_full_store_reports_its_first_failed_commit_at_once_and_counts_the_answers_it_lost(
        tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path)
    pages = store._write.execute("PRAGMA page_count").fetchone()[0]
    store._write.execute(f"PRAGMA max_page_count = {pages + 2}")  # a disk with two pages left
    heard: list[str] = []
    failed = threading.Event()
    store.start(on_error=lambda message: (heard.append(message), failed.set()))
    answers = 400
    for i in range(answers):
        store.put(fingerprint=i.to_bytes(16, "big"), outcome=ok_outcome(raw_output="x" * 400), policy="spam",
                  out_id="out1", run_id="run1")
    assert failed.wait(5)
    with pytest.raises(StoreError) as info:
        store.close()
    assert heard == [str(info.value)]
    assert str(path) in heard[0] and "full" in heard[0] and "rollback" not in heard[0]
    saved = len(ResultStore(path).lookup([i.to_bytes(16, "big") for i in range(answers)]))
    assert store.unsaved == answers - saved > 0
