"""abfs:// output folders against Azurite on loopback: the run lock, a run in and out, a rerun, a second
writer refused, a kill -9 and the resume (skipped where Azurite is not installed)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import requests
from support import SimulatorProcess, make_config, write_config, write_jsonl

from pipeline.core import exitcodes
from pipeline.core.storage import Location, StorageSettings, configure
from pipeline.output.azurelock import AzureLock
from pipeline.output.errors import OutputDirError, OutputDirLocked

ACCOUNT = "devstoreaccount1"
#: Azurite's published development key (not a secret)
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

pytestmark = pytest.mark.skipif(shutil.which("azurite-blob") is None,
                                reason="Azurite is not installed (npm install -g azurite)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    folder = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(["azurite-blob", "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                             str(folder), "--silent", "--skipApiVersionCheck"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"{endpoint}/{ACCOUNT}?comp=list", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _env(endpoint: str) -> dict[str, str]:
    return {"AZURE_STORAGE_ENDPOINT": endpoint, "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": KEY}


@pytest.fixture
def container(azurite: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A new container on Azurite, this process pointed at it; yields its name."""
    for name, value in _env(azurite).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    configure(StorageSettings())
    name = f"c{uuid.uuid4().hex[:12]}"
    lock = AzureLock(Location.parse(f"abfs://{name}/x") / ".lock")
    lock._client = lock._connect()
    assert lock._client.put(f"{lock._root}/{name}?restype=container", headers=_signed(lock, name),
                            timeout=10).status_code == 201
    yield name
    configure(StorageSettings())


def _signed(lock: AzureLock, name: str) -> dict[str, str]:
    import datetime as dt

    headers = {"x-ms-date": dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"), "x-ms-version": "2021-08-06"}
    text_path = f"/{name}\nrestype:container"
    headers["Authorization"] = f"SharedKey {ACCOUNT}:{lock._sign('PUT', text_path, headers, 0)}"
    return headers


def _lock(container: str) -> AzureLock:
    return AzureLock(Location.parse(f"abfs://{container}/out") / ".lock")


def test_a_second_holder_is_refused_and_a_taken_over_lock_is_noticed(container: str) -> None:
    first = _lock(container)
    first.acquire()
    try:
        with pytest.raises(OutputDirLocked, match=f"another run is using this directory \\(pid {os.getpid()} "):
            _lock(container).acquire()
        first._etag = '"0x1"'  # as if another run had replaced it since
        first.refresh()
        with pytest.raises(OutputDirError, match="the run lock was lost"):
            first.check()
    finally:
        first.release()


def test_without_the_account_key_the_lock_says_what_to_set(container: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_KEY")
    with pytest.raises(OutputDirError, match="AZURE_STORAGE_ACCOUNT_KEY"):
        _lock(container).acquire()


def test_a_run_into_azure_writes_every_label_and_a_rerun_finds_it_complete(container: str, tmp_path: Path) -> None:
    from pipeline.engines.local.app import run_job

    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(50)])
    with SimulatorProcess() as sim:
        config = make_config(tmp_path, [data], out=f"abfs://{container}/out", base_url=sim.base_url, shard_rows=20,
                             policies=["spam"])
        stream = io.StringIO()
        assert run_job(config, stream=stream, progress=False) == exitcodes.EXIT_OK, stream.getvalue()
        stream = io.StringIO()
        assert run_job(config, stream=stream, progress=False) == exitcodes.EXIT_OK
        assert "nothing to do" in stream.getvalue()
        assert sim.stats()["billed"] == 50
    shards = (Location.parse(f"abfs://{container}/out") / "labels").glob("*.parquet")
    labels = pl.concat([pl.read_parquet(io.BytesIO(s.read_bytes())) for s in shards])
    assert labels.height == 50 and labels["row_number"].n_unique() == 50


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_without_paying_twice_and_a_second_writer_is_refused(
        container: str, azurite: str, tmp_path: Path) -> None:
    rows = 300
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(rows)])
    env = {**os.environ, **_env(azurite), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with SimulatorProcess("--latency-ms", "30") as sim:
        config = write_config(tmp_path / "run.toml", inputs=[data], out=f"abfs://{container}/out",  # type: ignore[arg-type]
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


@pytest.mark.slow
def test_report_eval_and_export_read_an_azure_folder_and_write_back_into_it(container: str, tmp_path: Path) -> None:
    from pipeline.cli.main import main
    from pipeline.engines.local.app import run_job

    rows = [{"id": f"r{i}", "text": f"buy now {i}" if i % 2 else f"hello {i}", "gold": i % 2} for i in range(20)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    uri = f"abfs://{container}/out"
    with SimulatorProcess() as sim:
        config = make_config(tmp_path, [data], out=uri, base_url=sim.base_url, policies=["spam"])
        assert run_job(config, stream=io.StringIO(), progress=False) == exitcodes.EXIT_OK
    assert main(["report", uri]) == exitcodes.EXIT_OK
    assert main(["eval", uri, "--truth", str(data), "--label-column", "gold"]) == exitcodes.EXIT_OK
    assert main(["export", uri, "--format", "chat-jsonl", "--output", str(tmp_path / "train.jsonl")]) == 0
    out = Location.parse(uri)
    assert b'"scored": 20' in (out / "eval.json").read_bytes()
    assert b"</html>" in (out / "report.html").read_bytes()
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 20
