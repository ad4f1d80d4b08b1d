"""Crash safety: SIGKILL and signals in the middle of a run, then the same command again."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
from support import RunResult, SimulatorProcess, make_config, moderate_command, run_pipeline, write_config, write_jsonl

from pipeline.core import exitcodes
from pipeline.output.outdir import OutputDir, OutputDirError
from pipeline.output.resume import identity_changes, open_manifest, verify_shards
from pipeline.output.store import ResultStore

ROWS = 400
CONCURRENCY = 8
KEY_COLUMNS = ["id", "policy", "status", "violation", "category", "rule_ids"]


def _input(tmp_path: Path, rows: int = ROWS) -> Path:
    words = ["free money click here", "lovely weather", "buy now", "nice dog", "limited offer"]
    return write_jsonl(tmp_path / "in.jsonl",
                       [{"id": f"r{i:04d}", "text": f"{words[i % 5]} number {i}"} for i in range(rows)])


def _wait_for_billed(sim: SimulatorProcess, target: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if sim.stats()["billed"] >= target:
            return
        time.sleep(0.01)


def _labels(out: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / "labels").glob("part-*.parquet"))).sort("id", "policy")


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    data = _input(tmp_path)
    with SimulatorProcess("--latency-ms", "20", "--jitter-ms", "15") as sim:
        reference_out = tmp_path / "reference"
        ref_config = write_config(tmp_path / "ref.toml", inputs=[data], out=reference_out, base_url=sim.base_url,
                                  concurrency=CONCURRENCY)
        assert subprocess.run(moderate_command(ref_config), capture_output=True).returncode == 0
        billed_before = sim.stats()["billed"]

        out = tmp_path / "killed"
        config = write_config(tmp_path / "run.toml", inputs=[data], out=out, base_url=sim.base_url,
                              concurrency=CONCURRENCY)
        kills = 0
        for target in (40, 150, 290):
            proc = subprocess.Popen(moderate_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _wait_for_billed(sim, billed_before + target, proc)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=10)
        final = subprocess.run(moderate_command(config), capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stderr
        assert "Traceback" not in final.stderr
        billed = sim.stats()["billed"] - billed_before

    assert kills == 3
    labels = _labels(out)
    assert labels.height == ROWS  # one policy: every input row exactly once
    assert labels["id"].n_unique() == ROWS
    reference = _labels(reference_out)
    assert labels.select(KEY_COLUMNS).equals(reference.select(KEY_COLUMNS))
    # paid twice: the calls in flight at each kill, plus answers received in the last moments before
    # it that the store's writer thread had not committed yet (a few ms; more on a loaded machine)
    assert billed - ROWS <= kills * CONCURRENCY * 2
    report = (out / "cost_report.json").read_bytes()
    import orjson

    requests = orjson.loads(report)["requests"]
    assert billed - kills * CONCURRENCY * 2 <= requests <= billed
    assert len(orjson.loads(report)["runs"]) == 4


@pytest.mark.slow
def test_sigint_drains_in_flight_calls_and_the_rerun_pays_nothing_twice(tmp_path: Path) -> None:
    data = _input(tmp_path)
    with SimulatorProcess("--latency-ms", "40") as sim:
        out = tmp_path / "out"
        config = write_config(tmp_path / "run.toml", inputs=[data], out=out, base_url=sim.base_url,
                              concurrency=CONCURRENCY)
        proc = subprocess.Popen(moderate_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_billed(sim, 60, proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
        assert proc.returncode == exitcodes.EXIT_INTERRUPTED, stderr
        assert "SIGINT" in stderr and "Traceback" not in stderr
        first_billed = sim.stats()["billed"]
        assert first_billed < ROWS
        rerun = subprocess.run(moderate_command(config), capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        assert sim.stats()["billed"] == ROWS  # the drained calls were all stored: nothing paid twice
    assert _labels(out).height == ROWS


@pytest.mark.slow
def test_a_second_signal_stops_at_once_and_leaves_a_resumable_directory(tmp_path: Path) -> None:
    rows = 120
    data = _input(tmp_path, rows)
    with SimulatorProcess("--latency-ms", "300") as sim:
        out = tmp_path / "out"
        config = write_config(tmp_path / "run.toml", inputs=[data], out=out, base_url=sim.base_url,
                              concurrency=CONCURRENCY)
        proc = subprocess.Popen(moderate_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_billed(sim, 16, proc)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=10)
        assert time.monotonic() - started < 2.0
        assert proc.returncode == exitcodes.EXIT_INTERRUPTED, stderr
        assert "stopping now" in stderr
        rerun = subprocess.run(moderate_command(config), capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert sim.stats()["billed"] - rows <= CONCURRENCY
    assert _labels(out).height == rows


# ---- the resume rules, without a process -------------------------------------------------------

IDENTITY = {"input": "a.jsonl@1", "limit": None, "policies": ["spam@abc"], "model": "m"}


def test_identity_changes_name_the_keys_that_differ() -> None:
    assert identity_changes(IDENTITY, dict(IDENTITY)) == []
    assert identity_changes(IDENTITY, {**IDENTITY, "model": "other", "limit": 5}) == ["limit", "model"]
    assert identity_changes({}, {"model": "m"}) == ["model"]
    assert identity_changes({**IDENTITY, "engine": "ray"}, IDENTITY) == ["engine"]  # only the old one has it


def directory_with_two_shards(tmp_path: Path) -> tuple[OutputDir, ResultStore]:
    outdir = OutputDir(tmp_path / "out")
    outdir.path.mkdir()  # `moderate run` creates it when it takes the lock
    store = ResultStore(tmp_path / "store.sqlite")
    manifest = open_manifest(outdir, IDENTITY, shard_rows=10, force=False, store=store)
    for index in (0, 1):
        manifest.shards[index] = outdir.write_shard(index, [], input_rows=10, unsent=0)
    manifest.finished = True
    outdir.write_manifest(manifest)
    return outdir, store


def test_the_same_job_continues_its_manifest(tmp_path: Path) -> None:
    outdir, store = directory_with_two_shards(tmp_path)
    again = open_manifest(outdir, dict(IDENTITY), shard_rows=10, force=False, store=store)
    assert sorted(again.shards) == [0, 1] and again.finished


def test_another_job_is_refused_with_what_changed(tmp_path: Path) -> None:
    outdir, store = directory_with_two_shards(tmp_path)
    with pytest.raises(OutputDirError, match=r"\(model changed\).*--force"):
        open_manifest(outdir, {**IDENTITY, "model": "other"}, shard_rows=10, force=False, store=store)


def test_force_starts_over_with_a_new_manifest(tmp_path: Path) -> None:
    outdir, store = directory_with_two_shards(tmp_path)
    old = outdir.read_manifest()
    assert old is not None
    fresh = open_manifest(outdir, {**IDENTITY, "model": "other"}, shard_rows=10, force=True, store=store)
    assert fresh.shards == {} and fresh.out_id != old.out_id and not fresh.finished
    assert list(outdir.labels.glob("*.parquet")) == []


def test_a_missing_or_altered_shard_is_dropped_and_the_directory_reopened(tmp_path: Path) -> None:
    outdir, store = directory_with_two_shards(tmp_path)
    (outdir.labels / "part-00000.parquet").unlink()
    with open(outdir.labels / "part-00001.parquet", "ab") as shard:
        shard.write(b"x")
    manifest = open_manifest(outdir, dict(IDENTITY), shard_rows=10, force=False, store=store)
    assert manifest.shards == {} and not manifest.finished
    reread = outdir.read_manifest()
    assert reread is not None and reread.shards == {}


def test_verify_shards_keeps_intact_shards(tmp_path: Path) -> None:
    outdir, _ = directory_with_two_shards(tmp_path)
    manifest = outdir.read_manifest()
    assert manifest is not None
    assert verify_shards(outdir.path, manifest) == []
    assert sorted(manifest.shards) == [0, 1]


def test_runs_left_running_are_marked_killed(tmp_path: Path) -> None:
    outdir, store = directory_with_two_shards(tmp_path)
    manifest = outdir.read_manifest()
    assert manifest is not None
    store.record_run({"run_id": "r1", "out_id": manifest.out_id, "started_at": 1.0, "ended_at": 2.0,
                      "outcome": "running", "labels": 0, "sent": 0, "store_hits": 0, "duplicates": 0,
                      "elapsed_s": 0.0})
    store.close()
    open_manifest(outdir, dict(IDENTITY), shard_rows=10, force=False, store=store)
    assert [r["outcome"] for r in store.runs(manifest.out_id)] == ["killed"]


CAP = 0.002


def _capped_run(tmp_path: Path, data: Path, **overrides: object) -> RunResult:
    return run_pipeline(make_config(tmp_path, [data], policies=["spam"], max_cost=CAP, concurrency=2,
                                     **overrides))


def test_a_rerun_without_the_first_runs_store_is_refused_naming_both(tmp_path: Path) -> None:
    data = _input(tmp_path)
    shared = tmp_path / "shared.sqlite"
    first = _capped_run(tmp_path, data, store=str(shared))
    assert first.code == exitcodes.EXIT_BUDGET, first.stderr
    again = _capped_run(tmp_path, data)  # --store forgotten
    assert again.code == exitcodes.EXIT_USAGE
    assert again.stats.requests == 0
    assert str(shared) in again.stderr and str(first.out / "store.sqlite") in again.stderr
    assert again.stderr.count("\n") == 1 and "--force" in again.stderr


def test_a_forced_rerun_with_another_store_still_counts_what_the_directory_spent(tmp_path: Path) -> None:
    data = _input(tmp_path)
    first = _capped_run(tmp_path, data, store=str(tmp_path / "shared.sqlite"))
    assert first.code == exitcodes.EXIT_BUDGET, first.stderr
    spent = first.report()["cost_usd"]
    assert spent > CAP * 0.5
    forced = _capped_run(tmp_path, data, force=True)
    assert forced.code == exitcodes.EXIT_BUDGET, forced.stderr
    report = forced.report()
    assert report["earlier_stores_usd"] == pytest.approx(spent)
    assert report["cost_usd"] <= CAP * 1.05  # the cap covers the directory, whatever store it used
    assert forced.stats.requests <= 2  # at most the calls the stop's margin lets through
    assert f"directory total ${report['cost_usd']:.4f}" in forced.stderr


def test_a_resume_without_a_store_still_counts_what_the_first_run_spent(tmp_path: Path) -> None:
    data = _input(tmp_path)
    first = _capped_run(tmp_path, data, store="none")
    assert first.code == exitcodes.EXIT_BUDGET, first.stderr
    again = _capped_run(tmp_path, data, store="none")
    assert again.code == exitcodes.EXIT_BUDGET, again.stderr
    assert again.stats.requests <= 2
    assert again.report()["cost_usd"] <= CAP * 1.05
