"""Run-level failure paths: store write errors, unreadable inputs mid-run, exit codes across resumes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl
import pytest
from support import make_config, run_pipeline, write_jsonl

import pipeline.output.store as store_module
from pipeline.core import exitcodes
from pipeline.readers import InputError
from pipeline.readers.inputs import InputSet
from pipeline.simulator import Faults, SimulatorConfig


def _rows(tmp_path: Path, n: int, name: str = "in.jsonl") -> Path:
    return write_jsonl(tmp_path / name, [{"id": f"r{i}", "text": f"text {i}"} for i in range(n)])


def test_a_store_that_cannot_be_written_stops_the_run_instead_of_hanging(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    commit = store_module.ResultStore._commit
    calls = {"n": 0}

    def failing_commit(self, batch):
        calls["n"] += 1
        if calls["n"] > 3:
            raise sqlite3.OperationalError("database or disk is full")
        return commit(self, batch)

    monkeypatch.setattr(store_module.ResultStore, "_commit", failing_commit)
    result = run_pipeline(make_config(tmp_path, [_rows(tmp_path, 6000)], policies=["spam"]))
    assert result.code == exitcodes.EXIT_USAGE
    assert "database or disk is full" in result.stderr and "Traceback" not in result.stderr
    assert result.stats.billed < 6000


def test_an_input_that_fails_mid_run_leaves_no_shard_marked_complete(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _rows(tmp_path, 10, "a.jsonl"), _rows(tmp_path, 10, "b.jsonl")
    config = make_config(tmp_path, [first, second], policies=["spam"])
    batches = InputSet.batches

    def broken(self, **kwargs):
        for batch in batches(self, **kwargs):
            if batch.source.endswith("b.jsonl"):
                raise InputError(f"{batch.source}: Connection reset by peer")
            yield batch

    monkeypatch.setattr(InputSet, "batches", broken)
    failed = run_pipeline(config)
    assert failed.code == exitcodes.EXIT_USAGE and "Connection reset" in failed.stderr
    monkeypatch.setattr(InputSet, "batches", batches)
    rerun = run_pipeline(config)
    assert rerun.code == exitcodes.EXIT_OK, rerun.stderr
    labels = rerun.labels()
    assert sorted(labels["id"]) == sorted([f"r{i}" for i in range(10)] * 2)
    assert rerun.stats.billed == 10  # the rows of a.jsonl came from the store


def test_the_exit_code_of_a_resumed_run_counts_problems_of_earlier_runs(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 200)], policies=["spam"], max_cost=0.002, concurrency=4,
                         invalid_output_retries=0, shard_rows=5)
    first = run_pipeline(config, SimulatorConfig(faults=Faults(junk_output=0.1), seed=5))
    assert first.code == exitcodes.EXIT_BUDGET
    config.max_cost = None
    second = run_pipeline(config)  # no faults now: this run alone has nothing to complain about
    report = second.report()
    first_run = report["runs"][0]["run_id"]
    invalid = second.labels().filter(pl.col("status") == "invalid_output")
    assert first_run in set(invalid["run_id"])  # in a shard the first run finished and wrote
    assert second.code == exitcodes.EXIT_ROWS_FAILED


def test_force_starts_over_from_an_unreadable_manifest(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 20)], policies=["spam"])
    assert run_pipeline(config).code == exitcodes.EXIT_OK
    (Path(config.out) / "manifest.json").write_text("{not json")
    refused = run_pipeline(config)
    assert refused.code == exitcodes.EXIT_USAGE and "--force" in refused.stderr
    config.force = True
    forced = run_pipeline(config)
    assert forced.code == exitcodes.EXIT_OK and forced.stats.requests == 0
    assert forced.labels().height == 20


def test_a_store_that_cannot_commit_stops_sending_and_loses_no_more_than_the_calls_in_flight(
        tmp_path: Path) -> None:
    """A real failure: the run's process may not grow a file past 300 kB, so the store's log fills up."""
    import resource
    import subprocess

    from support import SimulatorProcess, moderate_command, write_config

    rows, concurrency = 40_000, 64
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"text number {i}"} for i in range(rows)])

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    out = tmp_path / "out"
    with SimulatorProcess("--latency-ms", "5") as sim:
        config = write_config(tmp_path / "run.toml", inputs=[data], out=out, base_url=sim.base_url,
                              concurrency=concurrency, shard_rows=10_000)
        run = subprocess.run(moderate_command(config), capture_output=True, text=True, preexec_fn=small_files,
                             timeout=120)
        billed = sim.stats()["billed"]
    assert run.returncode == exitcodes.EXIT_USAGE, run.stderr
    assert f"{out / 'store.sqlite'}: cannot write result store" in run.stderr
    assert "kept in the store" not in run.stderr and "cannot write the report" not in run.stderr
    assert "Traceback" not in run.stderr
    assert billed < rows // 4  # it stopped sending

    with sqlite3.connect(out / "store.sqlite") as db:
        stored = {bytes(fp).hex() for (fp,) in db.execute("SELECT fingerprint FROM results")}
    in_shards = set(pl.read_parquet(sorted((out / "labels").glob("part-*.parquet")))
                    .filter(pl.col("source") == "api")["fingerprint"].to_list())
    lost = billed - len(stored | in_shards)  # paid for, in neither the store nor the shards
    assert lost <= concurrency, run.stderr
