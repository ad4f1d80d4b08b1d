"""Endpoint faults: the run keeps going, loses nothing, bills what was billed, leaks no key."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from support import make_config, run_pipeline, write_jsonl

from pipeline.core import exitcodes
from pipeline.simulator import Faults, SimulatorConfig

ALL_FAULTS = Faults(error_5xx=0.04, html_error=0.02, reset=0.03, hang=0.01, truncated_body=0.03,
                    non_json=0.02, junk_output=0.02, refusal=0.015, length_empty=0.015, hang_seconds=1.5)


def _rows(tmp_path: Path, n: int) -> Path:
    words = ["free money click here", "lovely weather today", "buy now", "you people are vermin", "nice"]
    return write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"{words[i % 5]} {i}"} for i in range(n)])


@pytest.mark.slow
def test_twenty_percent_faults_of_every_kind_lose_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 300)], concurrency=32, request_timeout=0.5, max_attempts=6)
    result = run_pipeline(config, SimulatorConfig(latency_ms=2, jitter_ms=2, faults=ALL_FAULTS, seed=7))
    labels = result.labels()
    assert labels.height == 600
    assert labels.select(pl.struct("id", "policy").n_unique()).item() == 600
    ok = labels.filter(pl.col("status") == "ok").height
    assert ok / 600 >= 0.995, labels["status"].value_counts()
    assert sum(result.stats.faults.values()) > 0.15 * result.stats.requests
    report = result.report()
    assert report["requests"] == result.stats.billed
    assert report["prompt_tokens"] == result.stats.prompt_tokens
    assert report["completion_tokens"] == result.stats.completion_tokens
    assert "Traceback" not in result.stderr
    assert result.code in (exitcodes.EXIT_OK, exitcodes.EXIT_ROWS_FAILED)


def test_unusable_answers_end_with_their_own_status_and_are_still_billed(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 10)], policies=["spam"], max_attempts=3, max_tokens=100,
                         invalid_output_retries=1)
    result = run_pipeline(config, SimulatorConfig(faults=Faults(junk_output=1.0)))
    labels = result.labels()
    assert set(labels["status"]) == {"invalid_output"}
    assert labels["raw_output"].str.contains("lorem ipsum").all()
    assert result.code == exitcodes.EXIT_ROWS_FAILED
    assert result.report()["requests"] == result.stats.billed == 20  # first answer + one retry per row

    config = make_config(tmp_path, [_rows(tmp_path, 10)], policies=["spam"], max_attempts=3, max_tokens=100,
                         max_tokens_cap=400, out=str(tmp_path / "length"))
    result = run_pipeline(config, SimulatorConfig(faults=Faults(length_empty=1.0)))
    labels = result.labels()
    assert set(labels["status"]) == {"truncated"}
    assert (labels["attempts"] == 3).all()  # 100 -> 200 -> 400 tokens, then the cap
    assert result.report()["requests"] == 30


def test_a_rejected_row_fails_alone_and_the_run_goes_on(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "fine text"}, {"id": "b", "text": "bad [[reject]] text"}, {"id": "c", "text": "ok"}]
    result = run_pipeline(make_config(tmp_path, [write_jsonl(tmp_path / "r.jsonl", rows)], policies=["spam"]))
    labels = result.labels().sort("id")
    assert labels["status"].to_list() == ["ok", "rejected", "ok"]
    assert "HTTP 400" in labels["error"][1]
    assert result.code == exitcodes.EXIT_ROWS_FAILED


def test_wrong_model_or_no_credit_is_fatal_without_a_retry_storm(tmp_path: Path) -> None:
    data = _rows(tmp_path, 100)
    wrong_model = run_pipeline(make_config(tmp_path, [data], model="no-such-model", concurrency=4))
    assert wrong_model.code == exitcodes.EXIT_ENDPOINT
    assert wrong_model.stats.requests <= 4 + 1
    assert "404" in wrong_model.stderr
    no_credit = run_pipeline(make_config(tmp_path, [data], concurrency=4, out=str(tmp_path / "o2")),
                             SimulatorConfig(out_of_credit=True))
    assert no_credit.code == exitcodes.EXIT_ENDPOINT and "402" in no_credit.stderr
    assert no_credit.stats.requests <= 5


@pytest.mark.slow
def test_rate_limited_server_is_obeyed_through_retry_after(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 40)], policies=["spam"], concurrency=16, max_attempts=8)
    result = run_pipeline(config, SimulatorConfig(rpm=1200, retry_after="seconds"))
    assert result.code == exitcodes.EXIT_OK, result.stderr
    assert set(result.labels()["status"]) == {"ok"}
    assert result.stats.rate_limited < 40  # paused and slowed down, not a retry storm


@pytest.mark.slow
def test_the_api_key_appears_in_no_byte_written(tmp_path: Path, monkeypatch) -> None:
    key = "sk-TEST-7f3a9c-recognisable-key"
    monkeypatch.setenv("MODERATION_API_KEY", key)
    config = make_config(tmp_path, [_rows(tmp_path, 60)], provider="modelslab", concurrency=8,
                         request_timeout=0.5)
    result = run_pipeline(config, SimulatorConfig(api_key=key, faults=ALL_FAULTS, seed=11))
    assert result.stats.billed > 0
    assert key not in result.stderr
    for path in Path(config.out).rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_an_endpoint_that_never_answers_stops_the_run_at_once(tmp_path: Path) -> None:
    import asyncio
    import io
    import socket
    import time

    from pipeline.engines.local.app import run_job_async

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = make_config(tmp_path, [_rows(tmp_path, 200)], base_url=f"http://127.0.0.1:{port}/v1")
    stream = io.StringIO()
    started = time.monotonic()
    code = asyncio.run(run_job_async(config, stream=stream, progress=False))
    assert code == exitcodes.EXIT_ENDPOINT
    assert time.monotonic() - started < 10
    assert f"cannot connect to 127.0.0.1:{port}" in stream.getvalue()
    assert "Traceback" not in stream.getvalue()
