"""Benchmark: peak RSS of reading rows from S3 against reading the same file from disk.

100,000 rows (1,000,000 with --long) of the tweets Parquet file, read in full the way `moderate
run` reads its input (`open_inputs(...).batches()`), once from the local file and once from moto's
S3 server on 127.0.0.1 (a separate process). Target: S3 within 10 % of disk.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from bench.common import PYTHON, REPO, Report, run_measured, stop
from bench.memory import make_input

TARGET = 0.10
_READ = """
import sys
from pipeline.readers import open_inputs
rows = sum(len(b) for b in open_inputs([sys.argv[1]], text_column="text").batches(batch_size=2048))
print(rows)
"""
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server in a process of its own on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("moto's S3 server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def run(*, long: bool, results: dict[str, Any]) -> Report:
    import boto3

    rows = 1_000_000 if long else 100_000
    data = make_input(rows)
    env_before = dict(os.environ)
    measured = {}
    try:
        with s3_server() as endpoint:
            os.environ.update(_CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
            client = boto3.client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket="bench")
            client.upload_file(str(data), "bench", f"in/{data.name}")
            for where, path in (("disk", str(data)), ("s3", f"s3://bench/in/{data.name}")):
                m = run_measured([PYTHON, "-c", _READ, path], timeout=1800)
                if m.returncode != 0 or m.stdout.strip() != str(rows):
                    raise RuntimeError(f"reading {path} failed: {m.stderr[-1000:]}")
                measured[where] = m
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    ratio = measured["s3"].max_rss_mb / measured["disk"].max_rss_mb
    report = Report(f"object store: peak RSS reading {rows:,} rows from S3 (moto on loopback) vs disk")
    report.add_table(["source", "wall s", "peak RSS MB"],
                     [(k, f"{m.wall_s:.1f}", f"{m.max_rss_mb:.0f}") for k, m in measured.items()])
    report.note(f"S3 / disk peak RSS: {ratio:.2f} (target ≤ {1 + TARGET:.2f}); file {data.stat().st_size / 1e6:.0f} MB")
    results["objectstore"] = {"rows": rows, "rss_ratio": ratio}
    return report
