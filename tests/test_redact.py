"""Credentials never reach a log line: headers and body fields are redacted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import SimulatorProcess, write_jsonl

from pipeline.redact import REDACTED, redact_body, redact_headers

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
