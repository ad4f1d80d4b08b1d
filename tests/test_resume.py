"""Crash safety: SIGKILL and signals in the middle of a run, then the same command again."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
from support import SimulatorProcess, moderate_command, write_config, write_jsonl

from pipeline import exitcodes

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
    # paid twice: at most the calls in flight at each kill
    assert billed - ROWS <= kills * CONCURRENCY
    report = (out / "cost_report.json").read_bytes()
    import orjson

    requests = orjson.loads(report)["requests"]
    assert billed - kills * CONCURRENCY <= requests <= billed
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
