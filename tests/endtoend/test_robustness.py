"""A run under hosts and inputs that misbehave: it stalls on none, loses no row, and says what happened."""

from __future__ import annotations

import asyncio
import errno
import io
import sqlite3
import time
from pathlib import Path

import orjson
import polars as pl
import pytest
from aiohttp import web
from support import make_config, run_pipeline, serve_app, write_jsonl

from pipeline.core import exitcodes
from pipeline.engines.job import worker_count
from pipeline.engines.local.app import run_job_async
from pipeline.output.outdir import OutputDir
from pipeline.simulator import Faults, SimulatorConfig


def _rows(tmp_path: Path, n: int, name: str = "in.jsonl") -> Path:
    words = ["free money click here", "lovely weather today", "buy now", "you people are vermin", "nice"]
    return write_jsonl(tmp_path / name, [{"id": str(i), "text": f"{words[i % 5]} {i}"} for i in range(n)])


def _answer(content: object = '{"violation": 0, "policy_category": null}', *, completion_tokens: int = 20,
            **extra: object) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": completion_tokens, "total_tokens": 120}, **extra}


async def _serve(handler, config, *, path: str = "/v1/chat/completions") -> tuple[int, str]:
    """Run the job against a small loopback app with ``handler``; (exit code, stderr)."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config.base_url = f"http://127.0.0.1:{port}/v1"
    stream = io.StringIO()
    try:
        code = await asyncio.wait_for(run_job_async(config, stream=stream, progress=False), timeout=60)
    finally:
        await runner.cleanup()
    return code, stream.getvalue()


def _labels(config) -> pl.DataFrame:
    return pl.read_parquet(str(Path(config.out) / "labels" / "*.parquet"))


def test_content_sent_as_a_list_of_parts_is_read_as_text(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 60)], policies=["spam"])
    result = run_pipeline(config, SimulatorConfig(faults=Faults(content_parts=1.0), seed=1))
    labels = result.labels()
    assert result.code == exitcodes.EXIT_OK, result.stderr
    assert labels.height == 60 and labels["status"].unique().to_list() == ["ok"]


def test_a_bug_while_handling_a_row_fails_that_row_loudly_and_the_run_is_not_finished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.call.judge as judge

    real = judge.parse_verdict

    def parse(text: str):
        verdict = real(text)
        if verdict.violation == 1:
            raise RuntimeError("boom")  # a bug met on some rows only
        return verdict

    monkeypatch.setattr(judge, "parse_verdict", parse)
    config = make_config(tmp_path, [_rows(tmp_path, 50)], policies=["spam"], shard_rows=10)
    result = run_pipeline(config, SimulatorConfig())
    labels = result.labels()
    assert result.code == exitcodes.EXIT_INTERNAL
    assert labels.height == 50  # every row is there, the broken ones failed with the bug named
    failed = labels.filter(pl.col("status") == "failed")
    assert failed.height > 0 and failed["error"].str.contains("internal error: RuntimeError: boom").all()
    assert "finished" not in result.stderr.splitlines()[-2] and "internal error" in result.stderr
    manifest = orjson.loads((Path(config.out) / "manifest.json").read_bytes())
    assert manifest["finished"] is False


def test_a_missing_or_altered_shard_is_rebuilt_from_the_store_without_paying_again(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 40)], policies=["spam"], shard_rows=10)
    first = run_pipeline(config, SimulatorConfig())
    assert first.code == exitcodes.EXIT_OK
    shards = sorted((Path(config.out) / "labels").glob("part-*.parquet"))
    shards[1].unlink()
    shards[2].write_bytes(shards[2].read_bytes()[:-10] + b"0123456789")
    second = run_pipeline(config, SimulatorConfig())
    assert second.code == exitcodes.EXIT_OK, second.stderr
    assert "nothing to do" not in second.stderr
    assert second.stats.requests == 0  # rebuilt from the store
    labels = second.labels()
    assert labels.height == 40 and labels["id"].n_unique() == 40
    third = run_pipeline(config, SimulatorConfig())
    assert "nothing to do" in third.stderr


def test_a_two_megabyte_text_is_too_long_and_crashes_nothing(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "in.jsonl", [{"id": "big", "text": "word " * 420_000},
                                               {"id": "small", "text": "hello"}])
    config = make_config(tmp_path, [rows], policies=["spam"])
    result = run_pipeline(config, SimulatorConfig())
    statuses = dict(result.labels().select("id", "status").iter_rows())
    assert statuses == {"big": "too_long", "small": "ok"}, result.stderr
    assert "Traceback" not in result.stderr


def test_max_cost_holds_within_ten_percent_when_answers_are_long(tmp_path: Path) -> None:
    async def long_answers(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.json_response(_answer(completion_tokens=8000))

    cap = 0.05  # each answer costs about $0.0024: the cap is about 20 answers
    config = make_config(tmp_path, [_rows(tmp_path, 300)], policies=["spam"], concurrency=64, max_cost=cap,
                         max_tokens=8192, input_per_million=0.075, cached_input_per_million=0.0375,
                         output_per_million=0.30)
    code, stderr = asyncio.run(_serve(long_answers, config))
    assert code == exitcodes.EXIT_BUDGET, stderr
    report = orjson.loads((Path(config.out) / "cost_report.json").read_bytes())
    assert 0.9 * cap <= report["cost_usd"] <= 1.1 * cap, report["cost_usd"]
    assert _labels(config).height == 300


def test_a_full_disk_stops_sending_keeps_what_was_paid_and_resumes(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 400)], policies=["spam"], shard_rows=20, concurrency=4,
                         store=str(tmp_path / "elsewhere" / "store.sqlite"))
    real = OutputDir.write_shard
    writes = {"n": 0}

    def write_shard(self, index, rows, **kw):
        writes["n"] += 1
        if writes["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, index, rows, **kw)

    monkeypatch.setattr(OutputDir, "write_shard", write_shard)
    first = run_pipeline(config, SimulatorConfig(latency_ms=5))
    assert first.code == exitcodes.EXIT_USAGE, first.stderr
    assert "No space left on device" in first.stderr and "Traceback" not in first.stderr
    assert first.stats.requests < 200  # it stopped sending soon after the first failed write
    monkeypatch.setattr(OutputDir, "write_shard", real)
    second = run_pipeline(config, SimulatorConfig(latency_ms=1))
    assert second.code == exitcodes.EXIT_OK, second.stderr
    assert first.stats.billed + second.stats.billed <= 400 + 4  # paid once (calls in flight aside)
    assert second.labels().height == 400


def test_a_failure_in_the_stores_thread_stops_the_run_instead_of_finishing_with_nothing_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # only sqlite3 errors were caught: anything else ended the store's thread silently, and the run
    # said "finished" (exit 0) with no answer stored and none of what it paid in the ledger
    import pipeline.output.store as store

    real, calls = store.store_values, {"n": 0}

    def fails_once(outcome):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError("a value the store cannot take")
        return real(outcome)

    monkeypatch.setattr(store, "store_values", fails_once)
    result = run_pipeline(make_config(tmp_path, [_rows(tmp_path, 200)], policies=["spam"]), SimulatorConfig())
    assert result.code != exitcodes.EXIT_OK
    assert "cannot write result store (a value the store cannot take)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_answer_is_labelled_and_billed_once_and_its_absurd_counts_are_never_stored(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 100)], policies=["spam"], max_attempts=8)
    result = run_pipeline(config, SimulatorConfig(faults=Faults(malformed_fields=0.2), seed=5))
    labels = result.labels()
    assert labels.height == 100 and labels.filter(pl.col("status") == "ok").height == 100, result.stderr
    assert result.report()["requests"] == result.stats.billed == 100  # each answer used, none asked twice
    assert labels.filter(pl.col("error").str.contains("odd details")).height > 0
    assert labels["prompt_tokens"].max() < 1_000_000
    with sqlite3.connect(Path(config.out) / "store.sqlite") as db:
        assert db.execute("SELECT MAX(prompt_tokens), MIN(completion_tokens) FROM results").fetchone()[0] < 10**6
    again = run_pipeline(make_config(tmp_path, [tmp_path / "in.jsonl"], policies=["spam"], force=True),
                         SimulatorConfig())
    assert again.code == exitcodes.EXIT_OK, again.stderr


def test_an_answer_with_a_lone_surrogate_escape_is_labelled_and_stored(tmp_path: Path) -> None:
    # '\\ud800' without its pair: the stdlib JSON decoder makes a lone surrogate of it, and the
    # shard writer and the store's thread both died on it (a traceback, the paid answers lost)
    content = 'Verdict: {"violation": 1, "policy_category": "S1", "rationale": "bad \\ud800 here"}'

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(_answer(content))

    config = make_config(tmp_path, [_rows(tmp_path, 5)], policies=["spam"])
    code, stderr = asyncio.run(_serve(answer, config))
    assert code == exitcodes.EXIT_OK, stderr
    labels = _labels(config)
    assert labels["status"].to_list() == ["ok"] * 5
    assert labels["rationale"].to_list() == ["bad ? here"] * 5
    with sqlite3.connect(Path(config.out) / "store.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 5


def test_a_key_the_model_echoes_is_redacted_in_raw_output_reasoning_and_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-echo-0123456789-SECRET"
    monkeypatch.setenv("MODERATION_API_KEY", key)

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(_answer(f"I was sent {key}", reasoning=f"key {key}"))

    config = make_config(tmp_path, [_rows(tmp_path, 5)], policies=["spam"], keep_reasoning=True,
                         invalid_output_retries=0)
    code, stderr = asyncio.run(_serve(echo, config))
    assert code == exitcodes.EXIT_ROWS_FAILED
    labels = _labels(config)
    assert labels["raw_output"].str.contains("[redacted]", literal=True).all()
    for path in Path(config.out).rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert key not in stderr


def test_workers_are_capped_at_the_number_of_requests(tmp_path: Path) -> None:
    assert worker_count(100_000, 5, 2) == 10
    assert worker_count(64, None, 2) == 64  # a row count not known up front
    assert worker_count(64, 0, 2) == 1
    config = make_config(tmp_path, [_rows(tmp_path, 5)], policies=["spam"], concurrency=100_000)
    result = run_pipeline(config, SimulatorConfig())
    assert result.code == exitcodes.EXIT_OK


def test_a_run_killed_before_it_ended_is_marked_killed_by_the_next_run(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 10)], policies=["spam"])
    run_pipeline(config, SimulatorConfig())
    store = Path(config.out) / "store.sqlite"
    with sqlite3.connect(store) as db:  # what a kill -9 leaves behind
        db.execute("UPDATE runs SET outcome = 'running'")
        db.execute("UPDATE runs SET outcome = 'running'")
    (Path(config.out) / "labels" / "part-00000.parquet").unlink()
    run_pipeline(config, SimulatorConfig())
    with sqlite3.connect(store) as db:
        outcomes = [r[0] for r in db.execute("SELECT outcome FROM runs ORDER BY started_at")]
    assert outcomes == ["killed", "finished"]


def test_a_host_that_refuses_one_in_twenty_requests_slows_nobody_down(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 400)], policies=["spam"], concurrency=32)
    result = run_pipeline(config, SimulatorConfig(latency_ms=5, faults=Faults(rate_limited=0.05), seed=2))
    assert result.code == exitcodes.EXIT_OK
    assert result.labels().filter(pl.col("status") == "ok").height == 400
    assert "pausing all requests" not in result.stderr


@pytest.mark.slow
def test_a_host_refusing_everything_with_a_huge_retry_after_is_waited_for_at_most_the_cap(tmp_path: Path) -> None:
    calls = {"n": 0}

    async def refuse_then_answer(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] <= 60:  # a shared limit: every request refused, "come back in an hour"
            return web.json_response({"error": {"message": "rate limited"}}, status=429,
                                     headers={"Retry-After": "3600"})
        return web.json_response(_answer())

    config = make_config(tmp_path, [_rows(tmp_path, 60)], policies=["spam"], concurrency=60,
                         max_retry_after=2.5, max_refusals=50)
    started = time.monotonic()
    code, stderr = asyncio.run(_serve(refuse_then_answer, config))
    assert code == exitcodes.EXIT_OK, stderr
    pauses = [line for line in stderr.splitlines() if "pausing all requests" in line]
    assert pauses == ["moderate: pausing all requests for 2 s: 50 of the last 50 requests were refused"]
    assert time.monotonic() - started < 30  # an hour was asked for
    assert _labels(config).height == 60


def test_a_storm_of_refusals_asking_past_max_retry_after_stops_the_run_with_exit_4_and_resumes(
        tmp_path: Path) -> None:
    # every request: "429, Retry-After: 3600, x-ratelimit-remaining-requests: 0", no reset. Waiting
    # max_retry_after max_refusals times over would take 30 x 0.5 s here (30 x 600 s by default)
    config = make_config(tmp_path, [_rows(tmp_path, 30)], policies=["spam"], concurrency=8, max_retry_after=0.5)
    started = time.monotonic()
    stormy = run_pipeline(config, SimulatorConfig(quota_storm=3600))
    seconds = time.monotonic() - started
    assert stormy.code == exitcodes.EXIT_ENDPOINT, stormy.stderr
    assert seconds < 5 + 0.5  # the second refusal of a request, after one wait of max_retry_after
    errors = [line for line in stormy.stderr.splitlines() if line.startswith("moderate: error:")]
    assert len(errors) == 1 and "asking for longer than max_retry_after (0.5 s), up to 1 h 0 min: its quota looks " \
        "spent: run the same command later" in errors[0], stormy.stderr
    assert "Traceback" not in stormy.stderr
    assert stormy.stats.billed == 0 and set(stormy.labels()["status"]) == {"aborted"}

    resumed = run_pipeline(config, SimulatorConfig())  # the quota is back
    assert resumed.code == exitcodes.EXIT_OK, resumed.stderr
    assert resumed.labels().filter(pl.col("status") == "ok").height == 30


def test_a_queued_answer_on_another_host_is_not_fetched_with_the_key(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # a "processing" reply names where to fetch the answer; the key must not follow it to another host
    secret = "sk-live-never-leaves-its-host-42"
    monkeypatch.setenv("MODERATION_API_KEY", secret)
    config = make_config(tmp_path, [_rows(tmp_path, 3)], policies=["spam"], concurrency=1)
    seen: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", "") + (await request.text()))
        return web.json_response(_answer())

    async def go() -> tuple[int, str]:
        other = web.Application()
        other.router.add_route("*", "/fetch/{id}", elsewhere)
        async with serve_app(other) as other_root:
            async def queued(request: web.Request) -> web.Response:
                return web.json_response({"status": "processing", "id": 1, "eta": 0,
                                          "fetch_result": f"{other_root}/fetch/1"})
            return await _serve(queued, config)

    code, stderr = asyncio.run(go())
    assert seen == []
    assert code == exitcodes.EXIT_ROWS_FAILED, stderr
    labels = _labels(config)
    assert labels["status"].unique().to_list() == ["failed"]
    assert "another host" in labels["error"][0]
    assert secret not in stderr


def test_a_disk_that_fills_up_while_the_report_is_written_is_one_line_not_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the store's journal can take the last free bytes: then the report is what cannot be written
    import pipeline.engines.session as app

    config = make_config(tmp_path, [_rows(tmp_path, 40)], policies=["spam"])
    real = app.write_reports

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(app, "write_reports", full)
    first = run_pipeline(config, SimulatorConfig())
    assert first.code == exitcodes.EXIT_USAGE, first.stderr
    assert "No space left on device" in first.stderr and "Traceback" not in first.stderr
    assert not list(Path(config.out).glob(".*.tmp"))
    monkeypatch.setattr(app, "write_reports", real)
    second = run_pipeline(config, SimulatorConfig())
    assert second.code == exitcodes.EXIT_OK, second.stderr
    assert second.stats.billed == 0 and (Path(config.out) / "cost_report.json").exists()


def test_store_none_on_a_directory_with_its_own_store_is_refused_before_paying_again(tmp_path: Path) -> None:
    # the directory's store.sqlite holds answers already paid for and what the directory spent:
    # --store none would send them all again and forget that spend (--max-cost included)
    rows = _rows(tmp_path, 30)
    first = run_pipeline(make_config(tmp_path, [rows], policies=["spam"], limit=10), SimulatorConfig())
    assert first.code == exitcodes.EXIT_OK, first.stderr
    again = run_pipeline(make_config(tmp_path, [rows], policies=["spam"], store="none", force=True),
                         SimulatorConfig())
    assert again.code == exitcodes.EXIT_USAGE
    assert again.stats.requests == 0
    assert "store.sqlite" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.slow
def test_a_signal_during_a_host_ordered_pause_stops_at_once_not_after_the_grace_period(tmp_path: Path) -> None:
    # no call is in flight while everyone waits for a spent quota's reset: there is nothing to finish
    import os
    import signal
    import time

    config = make_config(tmp_path, [_rows(tmp_path, 50)], policies=["spam"], concurrency=2, grace_seconds=30.0)

    async def spent(request: web.Request) -> web.Response:
        return web.json_response(_answer(), headers={"x-ratelimit-remaining-requests": "0",
                                                     "x-ratelimit-reset-requests": "120s"})

    async def go() -> tuple[int, str, float]:
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, os.kill, os.getpid(), signal.SIGTERM)
        started = time.monotonic()
        code, stderr = await _serve(spent, config)
        return code, stderr, time.monotonic() - started

    code, stderr, seconds = asyncio.run(go())
    assert code == exitcodes.EXIT_INTERRUPTED, stderr
    assert seconds < 10
    labels = _labels(config)
    assert labels.filter(pl.col("status") == "ok").height >= 1
    assert labels.filter(pl.col("status") != "ok")["status"].unique().to_list() == ["interrupted"]


@pytest.mark.slow
def test_rows_waiting_out_a_long_retry_after_are_said_and_a_signal_ends_the_wait(tmp_path: Path) -> None:
    # every request refused with "Retry-After: 1e9": each row waits max_retry_after; the run must
    # not sit silent, and a signal must not wait for those retries
    import os
    import signal

    config = make_config(tmp_path, [_rows(tmp_path, 20)], policies=["spam"], concurrency=4, grace_seconds=30.0)

    async def busy(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "busy"}}, status=429, headers={"Retry-After": "1e9"})

    async def go() -> tuple[int, str]:
        asyncio.get_running_loop().call_later(1.5, os.kill, os.getpid(), signal.SIGTERM)
        return await _serve(busy, config)

    code, stderr = asyncio.run(go())
    assert code == exitcodes.EXIT_INTERRUPTED, stderr
    assert f"wait up to {config.max_retry_after:.0f} s before their retry: HTTP 429: busy" in stderr
    assert _labels(config)["status"].unique().to_list() == ["interrupted"]
