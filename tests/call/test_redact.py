"""Credentials never reach a log line: headers and body fields are redacted."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from support import LEAKED_KEY, SimulatorProcess, key_spellings, leaks, write_jsonl

from pipeline.call.redact import REDACTED, Redactor, redact_body, redact_headers

KEY = "sk-DEBUG-4e1f-recognisable"


def test_authorization_header_is_redacted_whatever_its_case() -> None:
    headers = redact_headers({"authorization": f"Bearer {KEY}", "X-Api-Key": KEY, "Accept": "x"})
    assert headers == {"authorization": REDACTED, "X-Api-Key": REDACTED, "Accept": "x"}


def test_key_field_of_a_body_is_redacted_and_long_bodies_are_cut() -> None:
    line = redact_body(b'{"model": "m", "key": "' + KEY.encode() + b'", "messages": []}')
    assert KEY not in line and REDACTED in line and '"model":"m"' in line
    assert redact_body(b"{" + b'"a":"' + b"x" * 2000 + b'"}', limit=100).endswith("chars)")
    assert redact_body(b"not json") == "<8 bytes, not JSON>"


@pytest.mark.slow
def test_debug_log_of_a_real_run_never_shows_the_key(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": "1", "text": "hello"}, {"id": "2", "text": "buy now"}])
    with SimulatorProcess("--api-key", KEY) as sim:
        env = {**os.environ, "MODERATE_DEBUG": "1", "MODERATION_API_KEY": KEY}
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", "--input", str(data), "--policy", "spam", "--provider",
             "modelslab", "--base-url", sim.base_url, "--model", "gpt-oss-safeguard-20b-simulator",
             "--out", str(tmp_path / "out"), "--no-progress"],
            capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "POST " in proc.stderr and REDACTED in proc.stderr
    assert KEY not in proc.stderr and KEY not in proc.stdout


def everything_written(out: Path) -> dict[str, str]:
    """Every file under ``out`` as text: Parquet decoded row by row, SQLite dumped."""
    texts = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            texts[str(path)] = str(pq.read_table(path).to_pylist())
        elif path.suffix in (".sqlite", ".db") or path.read_bytes()[:16] == b"SQLite format 3\x00":
            with sqlite3.connect(path) as db:
                texts[str(path)] = "\n".join(db.iterdump())
        else:
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    return texts


def test_every_spelling_of_the_key_is_redacted_alone_mixed_or_inside_base64() -> None:
    redactor = Redactor(LEAKED_KEY)
    for name, form in key_spellings(LEAKED_KEY).items():
        assert redactor.text(f"host said {form}.") == f"host said {REDACTED}.", name
    for before in (b"", b"u", b"us", b"user:", b"Bearer "):  # every byte alignment inside longer base64
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            embedded = encode(before + LEAKED_KEY.encode() + b"\n").decode()
            head, redacted, tail = redactor.text(embedded).partition(REDACTED)
            assert redacted and len(head) <= len(encode(before)) and len(tail) <= 4, (before, embedded)
    mixed = "sk-proj-9f&#47;Ke%7Ey\\u002b?echo&equals;Zq7_&gt;x"
    assert redactor.text(mixed) == REDACTED
    assert redactor.text("nothing secret, 50% & \\/ here") == "nothing secret, 50% & \\/ here"


def test_a_short_placeholder_key_is_not_redacted() -> None:
    assert Redactor("EMPTY").text("EMPTY reply") == "EMPTY reply"


@pytest.mark.slow
def test_no_spelling_of_the_key_reaches_outputs_store_reports_or_logs_of_a_host_that_echoes_it(
        tmp_path: Path) -> None:
    rows = [{"id": str(i), "text": f"{['hello there', 'buy now cheap pills', '[[reject]]'][i % 3]} {i}"}
            for i in range(45)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    truth = write_jsonl(tmp_path / "truth.jsonl", [{"id": r["id"], "spam": int("buy" in r["text"])} for r in rows])
    out = tmp_path / "out"
    env = {**os.environ, "MODERATE_DEBUG": "1", "MODERATION_API_KEY": LEAKED_KEY}
    captured: list[str] = []

    def moderate(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env,
                              timeout=120, cwd=tmp_path)
        captured.extend([proc.stdout, proc.stderr])
        return proc

    with SimulatorProcess("--api-key", LEAKED_KEY, "--echo-key", "--error-5xx", "0.1", "--junk-output", "0.6",
                          "--html-error", "0.05", "--seed", "5") as sim:
        endpoint = ["--base-url", sim.base_url, "--model", "gpt-oss-safeguard-20b-simulator"]
        ran = moderate("run", "--input", str(data), "--policy", "spam", "--output-format", "rationale",
                       "--keep-reasoning", "--log-format", "json", "--out", str(out), "--no-progress", *endpoint)
        assert ran.returncode == 1, ran.stderr  # finished; the rejected rows are counted
        checked = moderate("check", "--policy", "spam", "--output-format", "rationale", *endpoint)
        assert "canary spam" in checked.stdout, checked.stdout + checked.stderr
    assert moderate("report", str(out)).returncode == 0
    assert moderate("eval", str(out), "--truth", str(truth), "--label-column", "spam").returncode == 0
    assert moderate("export", str(out), "--format", "parquet", "--output", str(out / "train.parquet"),
                    "--input", str(data)).returncode == 0
    assert moderate("export", str(out), "--format", "chat-jsonl", "--output", str(out / "train.jsonl"),
                    "--input", str(data)).returncode == 0

    labels = pl.read_parquet(sorted((out / "labels").glob("*.parquet")))
    assert set(labels["status"]) >= {"ok", "rejected", "invalid_output"}, labels["status"].value_counts()
    assert labels["rationale"].str.contains(REDACTED, literal=True).any()
    assert labels["served_model"].str.contains(REDACTED, literal=True).all()
    assert labels["error"].str.contains(REDACTED, literal=True).any()
    assert "POST " in "".join(captured) and (out / "report.html").exists()
    written = everything_written(out)
    assert any(path.endswith(".parquet") for path in written) and "cost_report.json" in "".join(written)
    found = {place: names for place, text in {**written, **dict(enumerate(captured))}.items()
             if (names := leaks(str(text)))}
    assert found == {}
