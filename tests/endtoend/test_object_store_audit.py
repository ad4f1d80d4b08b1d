"""`moderate report`, `eval`, `export` and `estimate --calibrate` on a folder in S3 (moto's server on
loopback) give what they give on a copy of that folder on disk."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from support import make_config, run_pipeline, write_jsonl

from pipeline.cli.main import main
from pipeline.core import exitcodes
from pipeline.report.html import collect


def _copy_folder(s3, bucket: str, prefix: str, target: Path) -> None:
    client = s3.client()
    for key in s3.keys(bucket, prefix + "/"):
        path = target / key[len(prefix) + 1:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == exitcodes.EXIT_OK, captured.err
    return captured.out


@pytest.mark.slow
def test_report_eval_export_and_calibrate_read_an_s3_folder_as_its_copy_on_disk(
        tmp_path: Path, s3, comments: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where the shards are downloaded to
    bucket = s3.new_bucket()
    uri = f"s3://{bucket}/out"
    result = run_pipeline(make_config(tmp_path, [comments], out=uri, shard_rows=25))
    assert result.code == exitcodes.EXIT_OK, result.stderr
    local = tmp_path / "copy"
    _copy_folder(s3, bucket, "out", local)  # what one had to do before: the same bytes, read from disk
    rows = [orjson.loads(line) for line in comments.read_text().splitlines()]
    truth = write_jsonl(tmp_path / "truth.jsonl", [{"id": r["id"], "is_spam": int("free" in r["text"])} for r in rows])

    for folder in (uri, str(local)):
        _cli(capsys, "eval", folder, "--truth", str(truth), "--label-column", "spam=is_spam", "--json")
    evals = {folder: orjson.loads(_read(s3, bucket, folder, local, "eval.json")) for folder in (uri, str(local))}
    assert evals[uri] == evals[str(local)] and evals[uri]["policies"]["spam"]["scored"] > 0

    assert _cli(capsys, "report", uri).strip() == f"{uri}/report.html"
    _cli(capsys, "report", str(local))
    page = _read(s3, bucket, uri, local, "report.html").decode()
    assert "is_spam" in page  # the evaluation is shown, as on disk
    remote_data, local_data = collect(uri), collect(local)
    assert remote_data.pop("out") == uri and local_data.pop("out") == str(local)
    assert remote_data == local_data

    exported = {}
    for name, folder in (("remote", uri), ("local", str(local))):
        target = tmp_path / f"{name}.jsonl"
        _cli(capsys, "export", folder, "--format", "chat-jsonl", "--output", str(target))
        exported[name] = target.read_bytes()
    assert exported["remote"] == exported["local"] and exported["remote"].count(b"\n") == 120

    estimates = {}
    for folder in (uri, str(local)):
        out = _cli(capsys, "estimate", "--input", str(comments), "--policy", "spam", "--policy", "hate_harassment",
                   "--calibrate", folder, "--json")
        estimates[folder] = orjson.loads(out)
        assert estimates[folder].pop("calibrated_from") == folder
    assert estimates[uri] == estimates[str(local)]
    assert estimates[uri]["policies"]["spam"]["output_tokens_source"] == "measured on policy spam"
    assert list(temp.iterdir()) == []  # the downloads are removed


def _read(s3, bucket: str, folder: str, local: Path, name: str) -> bytes:
    if folder.startswith("s3://"):
        return s3.client().get_object(Bucket=bucket, Key=f"out/{name}")["Body"].read()
    return (local / name).read_bytes()


def test_a_missing_s3_folder_or_bucket_is_one_line_with_exit_2(s3, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = s3.new_bucket()
    for argv in (["report", f"s3://{bucket}/nothing"], ["eval", f"s3://{bucket}/nothing", "--truth", "t.csv",
                                                         "--label-column", "x"],
                 ["export", f"s3://no-such-bucket-{bucket}/out", "--format", "chat-jsonl", "--output", "x.jsonl"]):
        assert main(argv) == exitcodes.EXIT_USAGE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "s3://" in err and "Traceback" not in err, err


@pytest.mark.slow
def test_an_export_that_fails_midway_leaves_no_download_behind(tmp_path: Path, s3, comments: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    bucket = s3.new_bucket()
    assert run_pipeline(make_config(tmp_path, [comments], out=f"s3://{bucket}/out")).code == exitcodes.EXIT_OK
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "z", "text": "not the run's input"}])
    code = main(["export", f"s3://{bucket}/out", "--format", "chat-jsonl", "--output", str(tmp_path / "x.jsonl"),
                 "--input", str(other)])
    assert code == exitcodes.EXIT_USAGE and "not the one the run read" in capsys.readouterr().err
    assert list(temp.iterdir()) == [] and not (tmp_path / "x.jsonl").exists()


@pytest.mark.slow
def test_reports_and_evals_written_at_once_into_one_s3_folder_all_succeed(tmp_path: Path, s3, comments: Path) -> None:
    bucket = s3.new_bucket()
    uri = f"s3://{bucket}/out"
    assert run_pipeline(make_config(tmp_path, [comments], out=uri, shard_rows=25)).code == exitcodes.EXIT_OK
    truth = write_jsonl(tmp_path / "truth.jsonl", [{"id": f"r{i:03d}", "gold": i % 2} for i in range(60)])
    evaluation = ["eval", uri, "--truth", str(truth), "--label-column", "gold", "--bootstrap", "20"]
    commands = [["report", uri], evaluation] * 3
    start = threading.Barrier(len(commands))

    def one(argv: list[str]) -> int:
        start.wait()
        return sum(main(argv) for _ in range(2))

    with ThreadPoolExecutor(len(commands)) as pool:
        assert list(pool.map(one, commands)) == [0] * len(commands)
    page = s3.client().get_object(Bucket=bucket, Key="out/report.html")["Body"].read()
    assert page.startswith(b"<!DOCTYPE html>") and page.rstrip().endswith(b"</html>")
    assert orjson.loads(s3.client().get_object(Bucket=bucket, Key="out/eval.json")["Body"].read())["bootstrap"] == 20


@pytest.mark.slow
def test_an_export_stopped_by_sigterm_midway_leaves_no_download_behind(tmp_path: Path, s3, comments: Path) -> None:
    bucket = s3.new_bucket()
    uri = f"s3://{bucket}/out"
    assert run_pipeline(make_config(tmp_path, [comments], out=uri)).code == exitcodes.EXIT_OK
    output = tmp_path / "train.fifo"
    os.mkfifo(output)
    reader = os.open(output, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read: the export blocks once the pipe fills
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, **s3.env(), "TMPDIR": str(temp)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "export", uri, "--format", "chat-jsonl", "--output",
                             str(output)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not any(temp.glob("moderate-shards-*/*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(temp.glob("moderate-shards-*/*.parquet")), "the shards were never downloaded"
        time.sleep(0.5)  # writing, then blocked on the full pipe
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        while proc.poll() is None and time.monotonic() < deadline + 30:  # drained, so that closing the file ends
            with contextlib.suppress(BlockingIOError):
                os.read(reader, 1 << 16)
            time.sleep(0.01)
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(reader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == exitcodes.EXIT_INTERRUPTED, err
    assert list(temp.iterdir()) == [] and "Traceback" not in err
