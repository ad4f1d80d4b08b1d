"""Output folders on S3 (a real S3-compatible server on loopback): commit by manifest, resume, lock."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import SimulatorProcess, make_config, moderate_command, run_pipeline, write_config

from pipeline.core import exitcodes
from pipeline.output import open_output_dir
from pipeline.output.outdir import OutputDirError
from pipeline.output.remote import RemoteOutputDir

KEY_COLUMNS = ["id", "policy", "status", "violation", "category", "rule_ids"]


def _put_input(s3, bucket: str, rows: int, key: str = "in/data.parquet") -> None:
    words = ["free money click here", "lovely weather", "buy now", "nice dog", "limited offer"]
    table = pa.table({"id": [f"r{i:05d}" for i in range(rows)],
                      "text": [f"{words[i % 5]} number {i}" for i in range(rows)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=200)
    s3.client().put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


def _labels(s3, bucket: str, prefix: str) -> pl.DataFrame:
    keys = [k for k in s3.keys(bucket, f"{prefix}/labels/") if k.endswith(".parquet")]
    frames = [pl.read_parquet(io.BytesIO(s3.client().get_object(Bucket=bucket, Key=k)["Body"].read())) for k in keys]
    return pl.concat(frames).sort("id", "policy")


def test_s3_input_to_s3_output_round_trip_and_rerun_sends_nothing(tmp_path: Path, s3) -> None:
    bucket = s3.new_bucket()
    _put_input(s3, bucket, 120)
    config = make_config(tmp_path, [], out=f"s3://{bucket}/out", shard_rows=50)
    config.inputs = [f"s3://{bucket}/in/"]
    first = run_pipeline(config)
    assert first.code == exitcodes.EXIT_OK, first.stderr
    keys = s3.keys(bucket, "out/")
    assert "out/manifest.json" in keys and "out/cost_report.json" in keys and "out/.lock" not in keys
    assert "out/report.html" in keys  # written at the end of the run, as for a local folder
    assert len([k for k in keys if k.startswith("out/labels/part-")]) == 3
    labels = _labels(s3, bucket, "out")
    assert labels.height == 240 and set(labels["status"]) == {"ok"}
    again = run_pipeline(config)
    assert again.code == exitcodes.EXIT_OK and "nothing to do" in again.stderr
    assert again.stats.requests == 0


def test_s3_output_folder_without_a_manifest_is_refused_and_left_alone(tmp_path: Path, s3, comments: Path) -> None:
    bucket = s3.new_bucket()
    s3.client().put_object(Bucket=bucket, Key="out/labels/theirs.parquet", Body=b"not ours")
    result = run_pipeline(make_config(tmp_path, [comments], out=f"s3://{bucket}/out"))
    assert result.code == exitcodes.EXIT_USAGE and "not an output folder" in result.stderr
    assert s3.keys(bucket) == ["out/labels/theirs.parquet"]


def test_uncommitted_shard_of_a_killed_run_is_removed_and_replaced_shards_are_deleted(s3) -> None:
    bucket = s3.new_bucket()
    out = open_output_dir(f"s3://{bucket}/out")
    assert isinstance(out, RemoteOutputDir)
    out.lock()
    try:
        manifest = out.new_manifest(identity={}, shard_rows=10)
        first = out.write_shard(0, [], input_rows=0, unsent=1)
        manifest.shards[0] = first
        out.write_manifest(manifest)
        second = out.write_shard(0, [], input_rows=0, unsent=0)
        manifest.shards[0] = second
        out.write_manifest(manifest)  # the first upload is no longer listed: removed
        orphan = out.write_shard(1, [], input_rows=0, unsent=0)  # uploaded, never committed
    finally:
        out.unlock()
    assert f"out/{first.file}" not in s3.keys(bucket)
    assert out.shard_sha256(second.file) == second.sha256 and out.shard_sha256(first.file) is None
    assert f"out/{orphan.file}" in s3.keys(bucket)
    again = open_output_dir(f"s3://{bucket}/out")
    again.lock()
    try:
        assert again.read_manifest() is not None
        again.remove_stale_temp_files()
    finally:
        again.unlock()
    assert [k for k in s3.keys(bucket) if k.endswith(".parquet")] == [f"out/{second.file}"]


def test_a_second_writer_on_the_same_s3_folder_is_refused_with_exit_5(tmp_path: Path, s3, comments: Path) -> None:
    bucket = s3.new_bucket()
    config = make_config(tmp_path, [comments], out=f"s3://{bucket}/out")
    holder = open_output_dir(config.out)
    holder.lock()
    try:
        result = run_pipeline(config)
    finally:
        holder.unlock()
    assert result.code == exitcodes.EXIT_LOCKED and f"pid {os.getpid()} " in result.stderr
    assert result.stats.requests == 0


def test_unreachable_s3_output_fails_within_the_timeout_naming_the_uri(tmp_path: Path, comments: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config = make_config(tmp_path, [comments], out="s3://nowhere-bucket/out", storage_timeout=2.0)
    started = time.monotonic()
    result = run_pipeline(config)
    assert time.monotonic() - started < 30
    assert result.code == exitcodes.EXIT_USAGE, result.stderr
    assert "s3://nowhere-bucket/out" in result.stderr and result.stderr.count("\n") == 1
    assert result.stats.requests == 0


@pytest.mark.slow
def test_s3_run_killed_with_sigkill_resumes_to_the_same_labels(tmp_path: Path, s3) -> None:
    rows = 600
    bucket = s3.new_bucket()
    _put_input(s3, bucket, rows)
    env = {**os.environ, **s3.env(), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with SimulatorProcess("--latency-ms", "20", "--jitter-ms", "10") as sim:
        reference = write_config(tmp_path / "ref.toml", inputs=[], out=Path(f"s3://{bucket}/ref"),
                                 base_url=sim.base_url, shard_rows=100)
        config = write_config(tmp_path / "run.toml", inputs=[], out=Path(f"s3://{bucket}/killed"),
                              base_url=sim.base_url, shard_rows=100)
        for path in (reference, config):
            path.write_text(path.read_text().replace("paths = []", f'paths = ["s3://{bucket}/in/"]')
                            .replace("s3:/", "s3://").replace("s3:///", "s3://"))
        done = subprocess.run(moderate_command(reference), env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        proc = subprocess.Popen(moderate_command(config), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if any("killed/labels/part-" in k for k in s3.keys(bucket, "killed/")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert "killed/.lock" in s3.keys(bucket, "killed/")  # a killed run leaves its lock behind
        final = subprocess.run(moderate_command(config), env=env, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stderr
        assert "Traceback" not in final.stderr
    labels = _labels(s3, bucket, "killed")
    assert labels.height == rows and labels["id"].n_unique() == rows
    assert labels.select(KEY_COLUMNS).equals(_labels(s3, bucket, "ref").select(KEY_COLUMNS))
    assert "killed/.lock" not in s3.keys(bucket, "killed/")


def test_output_dir_error_names_an_unknown_scheme() -> None:
    with pytest.raises(OutputDirError, match=r"^ftp://x/out: cannot open this location"):
        open_output_dir("ftp://x/out")


def test_a_store_without_conditional_writes_needs_lock_off_then_keeps_the_guarantees(tmp_path: Path) -> None:
    from pipeline.core.storage import StorageSettings, configure

    uri = f"file://{tmp_path}/out"  # the object-store code path on a filesystem with no lock object
    with pytest.raises(OutputDirError, match=r"no run lock is available .* \[storage\] lock = false"):
        RemoteOutputDir(uri).lock()
    configure(StorageSettings(lock=False))
    try:
        out = RemoteOutputDir(uri)
        out.lock()
        manifest = out.new_manifest(identity={"x": 1}, shard_rows=10)
        manifest.shards[0] = out.write_shard(0, [], input_rows=0, unsent=0)
        out.write_manifest(manifest)
        out.unlock()
        assert out.read_manifest() == manifest
        assert out.shard_files() == [out.path / manifest.shards[0].file]
        out.clear()
        assert out.read_manifest() is None and list((tmp_path / "out" / "labels").iterdir()) == []
    finally:
        configure(StorageSettings())
