"""`moderate run --engine ray` on a local Ray instance (2 CPUs) against the simulator over loopback."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import polars as pl
import pytest
from support import SimulatorProcess, make_config, moderate_command, write_config, write_jsonl

from pipeline.core import exitcodes
from pipeline.engines.local.app import run_job
from pipeline.engines.ray import engine
from pipeline.engines.ray.engine import run_on_ray

#: every column that says what the answer was and where it belongs (not when or by which run)
SAME = ["id", "policy", "violation", "status", "category", "rule_ids", "confidence", "rationale", "error",
        "model", "policy_version", "reasoning_effort", "output_format", "prompt_tokens", "completion_tokens",
        "cost_usd", "attempts", "fingerprint", "row_number", "input_file"]


def _input(tmp_path: Path, rows: int) -> Path:
    words = ["free money click here", "lovely weather", "buy now", "you people are vermin", "limited offer", ""]
    return write_jsonl(tmp_path / "in.jsonl",
                       [{"id": f"r{i:04d}", "text": f"{words[i % 6]} number {i}" if i % 6 else ""}
                        for i in range(rows)])


def _labels(out: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / "labels").glob("part-*.parquet"))).sort("row_number", "policy")


def test_without_ray_the_engine_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    stream = io.StringIO()
    config = make_config(tmp_path, [_input(tmp_path, 5)])
    assert run_on_ray(config, stream=stream) == exitcodes.EXIT_USAGE
    assert stream.getvalue() == engine.RAY_MISSING + "\n"
    assert "pip install '.[ray]'" in stream.getvalue()


@pytest.mark.slow
def test_labels_are_those_of_the_local_engine(tmp_path: Path, ray_cluster: str) -> None:
    data = _input(tmp_path, 240)
    with SimulatorProcess("--latency-ms", "5") as sim:
        local = make_config(tmp_path, [data], out=str(tmp_path / "local"), base_url=sim.base_url, shard_rows=50)
        assert run_job(local, stream=io.StringIO(), progress=False) == exitcodes.EXIT_OK
        on_ray = make_config(tmp_path, [data], out=str(tmp_path / "ray"), base_url=sim.base_url, shard_rows=50)
        stream = io.StringIO()
        assert run_on_ray(on_ray, actors=2, stream=stream) == exitcodes.EXIT_OK, stream.getvalue()

    local_labels, ray_labels = _labels(tmp_path / "local"), _labels(tmp_path / "ray")
    assert ray_labels.height == 240 * 2
    assert ray_labels.select(SAME).equals(local_labels.select(SAME))
    assert ray_labels.schema == local_labels.schema
    names = sorted(p.name for p in (tmp_path / "ray" / "labels").glob("*.parquet"))
    assert names == sorted(p.name for p in (tmp_path / "local" / "labels").glob("*.parquet"))
    assert len(names) == 5
    import orjson

    local_report = orjson.loads((tmp_path / "local" / "cost_report.json").read_bytes())
    ray_report = orjson.loads((tmp_path / "ray" / "cost_report.json").read_bytes())
    for key in ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "statuses", "labels"):
        assert ray_report[key] == local_report[key], key
    assert (tmp_path / "ray" / "report.html").exists()
    # a second run finds the directory complete
    stream = io.StringIO()
    assert run_on_ray(on_ray, actors=2, stream=stream) == exitcodes.EXIT_OK
    assert "nothing to do" in stream.getvalue()


class _Sampler:
    """The simulator's request counter, read every 50 ms while a run goes on."""

    def __init__(self, sim: SimulatorProcess) -> None:
        self.sim, self.samples = sim, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append((time.monotonic(), self.sim.stats()["requests"]))

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_the_configured_rpm_holds_across_two_actors(tmp_path: Path, ray_cluster: str) -> None:
    # 20 a second at 1 s each: about 20 in flight, more than one actor's 16 connections; each actor
    # alone could send 16 a second, so two without a shared limit would pass the limit
    rpm, concurrency = 1200, 16
    data = _input(tmp_path, 240)  # 200 requests (every sixth text is empty)
    with SimulatorProcess("--latency-ms", "1000", "--rpm", str(rpm)) as sim:
        config = make_config(tmp_path, [data], out=str(tmp_path / "ray"), base_url=sim.base_url, shard_rows=60,
                             policies=["spam"], rpm=rpm, concurrency=concurrency,
                             request_timeout=60.0)  # about the rate, not timeouts: Ray's start-up loads the box
        stream = io.StringIO()
        with _Sampler(sim) as sampler:
            code = run_on_ray(config, actors=2, stream=stream)
        stats = sim.stats()
    assert code == exitcodes.EXIT_OK, stream.getvalue()
    # 200 texts; a request retried after a client-side timeout on a loaded machine would be sent twice
    assert 200 <= stats["requests"] <= 200 + concurrency
    assert stats["rate_limited"] == 0  # the simulator's own 1200/min bucket never refused one
    assert stats["max_in_flight"] > concurrency  # both actors were sending at once
    busy = [(t, n) for t, n in sampler.samples if 0 < n < 200]
    (t0, n0), (t1, n1) = busy[0], busy[-1]
    assert (n1 - n0) / (t1 - t0) <= rpm / 60 * 1.05  # measured over the run, between first and last request


def _stop_when_billed(sim: SimulatorProcess, command: list[str], billed: int, sig: signal.Signals) -> int:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and sim.stats()["billed"] < billed:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(sig)
    code = proc.wait(timeout=30)
    time.sleep(1.0)  # Ray ends the driver's actors; calls they had in flight may still land
    return code


@pytest.mark.slow
def test_a_driver_stopped_then_killed_midway_resumes_without_paying_twice(tmp_path: Path, ray_cluster: str) -> None:
    rows, concurrency, actors = 400, 4, 2
    data = write_jsonl(tmp_path / "in.jsonl",
                       [{"id": f"r{i:04d}", "text": f"buy now number {i}"} for i in range(rows)])
    with SimulatorProcess("--latency-ms", "20", "--jitter-ms", "10") as sim:
        config = write_config(tmp_path / "run.toml", inputs=[data], out=tmp_path / "out", base_url=sim.base_url,
                              concurrency=concurrency, shard_rows=100)
        command = moderate_command(config, "--engine", "ray", "--ray-address", ray_cluster, "--ray-actors",
                                   str(actors))
        assert _stop_when_billed(sim, command, 100, signal.SIGTERM) == exitcodes.EXIT_INTERRUPTED
        assert _stop_when_billed(sim, command, 250, signal.SIGKILL) == -signal.SIGKILL
        final = subprocess.run(command, capture_output=True, text=True, timeout=180)
        billed = sim.stats()["billed"]
    assert final.returncode == 0, final.stderr
    assert "Traceback" not in final.stderr
    labels = _labels(tmp_path / "out")
    assert labels.height == rows and labels["id"].n_unique() == rows
    assert set(labels["status"]) == {"ok"}
    # paid twice: only answers lost with the actors at each stop, each actor holding at most
    # `concurrency` calls in flight and the answers of the last milliseconds not yet committed
    assert billed - rows <= 2 * 2 * actors * concurrency
    assert labels.filter(pl.col("source") == "store").height >= 150  # answers kept by the stopped runs
    import orjson

    runs = orjson.loads((tmp_path / "out" / "runs.json").read_bytes())
    assert [r["outcome"] for r in runs] == ["interrupted", "killed", "finished"]


@pytest.mark.slow
def test_a_stop_on_one_shard_begins_no_other_and_the_summary_counts_what_the_shards_hold(
        tmp_path: Path, ray_cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a daily cap of 45 requests over 8 shards of 30 rows: the shard that meets it stops the run
    monkeypatch.setenv("MODERATION_API_KEY", "sk-or-test-0123456789")
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i:04d}", "text": f"buy now number {i}"} for i in range(240)])
    with SimulatorProcess("--profile", "openrouter", "--rpd", "45", "--latency-ms", "20") as sim:
        config = make_config(tmp_path, [data], out=str(tmp_path / "ray"), base_url=sim.base_url, shard_rows=30,
                             provider="openrouter", policies=["spam"], concurrency=4)
        stream = io.StringIO()
        code = run_on_ray(config, actors=2, stream=stream)
        requests = sim.stats()["requests"]
    out = stream.getvalue()
    assert code == exitcodes.EXIT_ENDPOINT, out
    assert "free-models-per-day" in out
    assert requests < 45 + 2 * 4 * 2  # shards begun after the stop would each have met the cap again
    import orjson

    manifest = orjson.loads((tmp_path / "ray" / "manifest.json").read_bytes())
    listed = sorted(info["file"] for info in manifest["shards"].values())
    on_disk = sorted(f"labels/{p.name}" for p in (tmp_path / "ray" / "labels").glob("part-*.parquet"))
    assert listed == on_disk  # every shard written is in the manifest
    labels = _labels(tmp_path / "ray")
    counts = dict(labels.group_by("status").len().iter_rows())
    summary = next(line for line in out.splitlines() if ": aborted: " in line)
    assert f"aborted={counts['aborted']}" in summary and f"ok={counts['ok']}" in summary, (summary, counts)
    assert counts["ok"] == 45


def test_store_none_is_refused_in_one_line_as_each_shard_keeps_its_answers(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    stream = io.StringIO()
    config = make_config(tmp_path, [_input(tmp_path, 5)], store="none")
    assert run_on_ray(config, stream=stream) == exitcodes.EXIT_USAGE
    assert stream.getvalue().count("\n") == 1 and "--store none" in stream.getvalue()
    assert not (tmp_path / "out").exists()  # refused before the output directory is touched


def _billed_in_stores(out: Path) -> int:
    import sqlite3

    total = 0
    for path in (out / "results").glob("*.sqlite"):
        with contextlib.closing(sqlite3.connect(path)) as db:
            total += db.execute("SELECT COALESCE(SUM(requests), 0) FROM billing").fetchone()[0]
    return total


@pytest.mark.slow
def test_a_sigterm_of_the_driver_keeps_every_paid_answer_and_the_rerun_pays_for_none_again(
        tmp_path: Path, ray_cluster: str) -> None:
    rows, concurrency, actors = 1000, 8, 2
    data = write_jsonl(tmp_path / "in.jsonl",
                       [{"id": f"r{i:04d}", "text": f"buy now number {i}"} for i in range(rows)])
    with SimulatorProcess("--latency-ms", "50", "--jitter-ms", "20") as sim:
        config = write_config(tmp_path / "run.toml", inputs=[data], out=tmp_path / "out", base_url=sim.base_url,
                              concurrency=concurrency, shard_rows=100)
        command = moderate_command(config, "--engine", "ray", "--ray-address", ray_cluster, "--ray-actors",
                                   str(actors))
        assert _stop_when_billed(sim, command, 200, signal.SIGTERM) == exitcodes.EXIT_INTERRUPTED
        billed = sim.stats()["billed"]
        assert _billed_in_stores(tmp_path / "out") == billed  # calls in flight were waited for and stored
        final = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert final.returncode == 0, final.stderr
        assert sim.stats()["billed"] == rows  # nothing paid twice


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_driver_killed_with_sigkill_leaves_none_of_its_own_rays_processes_running(tmp_path: Path) -> None:
    from pipeline.engines.ray.watchdog import _stat, descendants

    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i:04d}", "text": f"buy now {i}"} for i in range(2000)])
    with SimulatorProcess("--latency-ms", "20") as sim:
        config = write_config(tmp_path / "run.toml", inputs=[data], out=tmp_path / "out", base_url=sim.base_url,
                              shard_rows=100)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the driver starts its own Ray
        driver = subprocess.Popen(moderate_command(config, "--engine", "ray", "--ray-actors", "2"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        seen: set[tuple[int, int]] = set()
        deadline = time.monotonic() + 120
        while driver.poll() is None and sim.stats()["billed"] < 50 and time.monotonic() < deadline:
            seen |= descendants(driver.pid)
            time.sleep(0.2)
        seen |= descendants(driver.pid)
        assert driver.poll() is None and len(seen) > 5  # Ray's processes and the actors are up
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)

        def running() -> list[int]:
            return [pid for pid, started in seen if (stat := _stat(pid)) is not None and stat[1] == started]

        until = time.monotonic() + 10  # Ray's agents alone used to linger a minute or two
        while running() and time.monotonic() < until:
            time.sleep(0.2)
        left = running()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert left == []


@pytest.mark.slow
def test_an_object_store_output_gets_every_label_row_and_a_rerun_from_elsewhere_resumes_from_it(
        tmp_path: Path, ray_cluster: str, s3) -> None:
    bucket = s3.new_bucket()
    data = _input(tmp_path, 120)
    with SimulatorProcess("--latency-ms", "5") as sim:
        config = make_config(tmp_path, [data], out=f"s3://{bucket}/labels-run", base_url=sim.base_url,
                             shard_rows=40)
        stream = io.StringIO()
        assert run_on_ray(config, actors=2, stream=stream) == exitcodes.EXIT_OK, stream.getvalue()
        sent = sim.stats()["billed"]
        keys = s3.keys(bucket, "labels-run/")
        shards = [k for k in keys if k.startswith("labels-run/labels/")]
        assert len(shards) == 3 and "labels-run/manifest.json" in keys and "labels-run/cost_report.json" in keys
        assert sorted(k for k in keys if "/results/" in k) == [f"labels-run/results/part-0000{k}.sqlite"
                                                              for k in range(3)]
        client = s3.client()
        frames = [pl.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key=k)["Body"].read()))
                  for k in shards]
        labels = pl.concat(frames)
        assert labels.height == 120 * 2 and labels["row_number"].n_unique() == 120
        report = orjson.loads(client.get_object(Bucket=bucket, Key="labels-run/cost_report.json")["Body"].read())
        assert report["requests"] == sent
        # the same command from a machine with none of the stores: the folder is complete
        stream = io.StringIO()
        assert run_on_ray(config, actors=2, stream=stream) == exitcodes.EXIT_OK
        assert "nothing to do" in stream.getvalue()
        # started over: every answer comes from the stores in the bucket, none is paid again
        config.force = True
        stream = io.StringIO()
        assert run_on_ray(config, actors=2, stream=stream) == exitcodes.EXIT_OK, stream.getvalue()
        assert sim.stats()["billed"] == sent


@pytest.mark.slow
def test_a_text_in_two_shards_is_paid_once(tmp_path: Path, ray_cluster: str) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i % 60}"} for i in range(120)])
    with SimulatorProcess("--latency-ms", "200") as sim:
        config = make_config(tmp_path, [data], base_url=sim.base_url, shard_rows=30, policies=["spam"])
        stream = io.StringIO()
        assert run_on_ray(config, actors=2, stream=stream) == exitcodes.EXIT_OK, stream.getvalue()
        assert sim.stats()["billed"] == 60
    labels = _labels(tmp_path / "out")
    assert labels.height == 120 and set(labels["status"]) == {"ok"}
    assert labels.filter(pl.col("row_number") < 60)["violation"].to_list() == \
        labels.filter(pl.col("row_number") >= 60)["violation"].to_list()
    assert orjson.loads((tmp_path / "out" / "cost_report.json").read_bytes())["requests"] == 60
    assert " 60 labels copied from another shard" in stream.getvalue()


@pytest.mark.slow
def test_max_cost_at_half_the_job_stops_the_cluster_near_the_cap_and_the_rerun_finishes(
        tmp_path: Path, ray_cluster: str) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(160)])
    with SimulatorProcess("--latency-ms", "20") as sim:
        whole = make_config(tmp_path, [data], base_url=sim.base_url, shard_rows=40, policies=["spam"],
                            out=str(tmp_path / "whole"))
        assert run_job(whole, stream=io.StringIO(), progress=False) == exitcodes.EXIT_OK
        cost = orjson.loads((tmp_path / "whole" / "cost_report.json").read_bytes())["cost_usd"]
        config = make_config(tmp_path, [data], base_url=sim.base_url, shard_rows=40, policies=["spam"],
                             max_cost=cost / 2)
        stream = io.StringIO()
        assert run_on_ray(config, actors=2, stream=stream) == exitcodes.EXIT_BUDGET, stream.getvalue()
        spent = orjson.loads((tmp_path / "out" / "cost_report.json").read_bytes())["cost_usd"]
        assert cost / 2 * 0.8 <= spent <= cost / 2 * 1.1
        config.max_cost = None
        stream = io.StringIO()
        assert run_on_ray(config, actors=2, stream=stream) == exitcodes.EXIT_OK, stream.getvalue()
        assert sim.stats()["billed"] == 160 * 2  # the uncapped run, then each text once more
    report = orjson.loads((tmp_path / "out" / "cost_report.json").read_bytes())
    assert report["requests"] == 160 and report["cost_usd"] == pytest.approx(cost)


@pytest.mark.slow
def test_the_nightly_config_runs_on_ray_with_its_sample_canaries_json_log_and_shared_store(
        tmp_path: Path, ray_cluster: str) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now and click here {i}"}
                                               for i in range(200)])
    canaries = write_jsonl(tmp_path / "canaries.jsonl", [
        {"text": "buy now and click here for free money", "policy": "spam", "violation": 1},
        {"text": "see you at the meetup on friday", "policy": "spam", "violation": 0}])
    store = tmp_path / "shared.sqlite"
    env = {**os.environ, "MODERATION_API_KEY": "sk-nightly-secret"}
    with SimulatorProcess("--latency-ms", "5") as sim:
        def night(out: str) -> subprocess.CompletedProcess:
            command = [sys.executable, "-m", "pipeline", "run", "configs/nightly.toml", "--engine", "ray",
                       "--ray-address", ray_cluster, "--ray-actors", "2", "--input", str(data), "--out", out,
                       "--base-url", sim.base_url, "--model", "gpt-oss-safeguard-20b-simulator", "--rpm", "60000",
                       "--tpm", "0", "--store", str(store),
                       "--max-cost", "5", "--sample", "40", "--canaries", str(canaries)]
            return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env,
                                  cwd=Path(__file__).parents[3])

        first = night(str(tmp_path / "night1"))
        assert first.returncode == 0, first.stderr
        sent = sim.stats()["billed"]
        second = night(str(tmp_path / "night2"))  # the same rows another night: answered from --store
        assert second.returncode == 0, second.stderr
        assert sim.stats()["billed"] - sent == 2  # only the canaries, asked again every night
    events = [orjson.loads(line) for line in first.stderr.splitlines()]  # every line is one JSON object
    assert events[-1]["event"] == "finish" and events[-1]["exit_code"] == 0
    assert "sk-nightly-secret" not in first.stderr + second.stderr
    labels = _labels(tmp_path / "night1")
    assert 30 <= labels["row_number"].n_unique() <= 50 and labels.height == labels["row_number"].n_unique() * 4
    report = orjson.loads((tmp_path / "night1" / "cost_report.json").read_bytes())
    assert report["canaries"]["passed"] == 2
    assert (tmp_path / "night1" / "canaries.parquet").exists()
    assert set(_labels(tmp_path / "night2")["source"]) == {"store"}


def test_a_second_driver_on_a_locked_object_store_folder_is_refused_before_starting_ray(
        tmp_path: Path, s3, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    from pipeline.engines.ray import rayside
    from pipeline.output import open_output_dir

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a refused run")

    monkeypatch.setattr(rayside, "connect", no_ray)
    bucket = s3.new_bucket()
    holder = open_output_dir(f"s3://{bucket}/out")
    holder.lock()
    try:
        stream = io.StringIO()
        config = make_config(tmp_path, [_input(tmp_path, 10)], out=f"s3://{bucket}/out")
        assert run_on_ray(config, stream=stream) == exitcodes.EXIT_LOCKED
        assert stream.getvalue().count("\n") == 1 and "another run is using" in stream.getvalue()
    finally:
        holder.unlock()
