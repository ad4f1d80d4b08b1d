"""Each host as its own docs say it behaves (the simulator's host profiles), end to end over loopback."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import orjson
import polars as pl
import pytest
from support import make_config, run_pipeline, write_jsonl

from pipeline.config.load import apply_overrides, load_config
from pipeline.core import exitcodes
from pipeline.engines.local.app import run_job_async
from pipeline.simulator import Faults, SimulatorConfig, start_simulator

REPO = Path(__file__).resolve().parents[2]
KEY = "ml-key-0123456789"


def _rows(tmp_path: Path, n: int) -> Path:
    words = ["free money click here", "lovely weather today", "buy now", "you people are vermin", "nice"]
    return write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"{words[i % 5]} {i}"} for i in range(n)])


def _modelslab_job(tmp_path: Path, base_url: str, n: int = 300):
    config = load_config(str(REPO / "configs" / "modelslab.toml"))
    return apply_overrides(config, {"base_url": base_url, "inputs": [str(_rows(tmp_path, n))],
                                    "policies": ["spam"], "out": str(tmp_path / "out"), "max_cost": None})


async def _run(config, sim_config: SimulatorConfig) -> tuple[int, str, object, float]:
    async with start_simulator(sim_config) as sim:
        config.base_url = sim.base_url
        stream = io.StringIO()
        started = time.monotonic()
        code = await run_job_async(config, stream=stream, progress=False)
        return code, stream.getvalue(), sim.stats, time.monotonic() - started


def test_modelslab_preset_labels_every_row_within_the_account_queue(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATION_API_KEY", KEY)
    config = _modelslab_job(tmp_path, "http://unused")
    assert config.model == "openai-gpt-oss-safeguard-20b" and config.concurrency == 5
    code, stderr, stats, _ = asyncio.run(_run(config, SimulatorConfig(profile="modelslab", queue=5, api_key=KEY,
                                                                      latency_ms=5, jitter_ms=3)))
    assert code == exitcodes.EXIT_OK, stderr
    labels = pl.read_parquet(str(tmp_path / "out" / "labels" / "*.parquet"))
    assert labels.height == 300 and labels["status"].unique().to_list() == ["ok"]
    assert stats.queue_rejections <= 5


def test_modelslab_with_a_wrong_key_stops_at_once_saying_the_key_is_the_problem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATION_API_KEY", "not-the-key")
    config = _modelslab_job(tmp_path, "http://unused")
    code, stderr, stats, seconds = asyncio.run(_run(config, SimulatorConfig(profile="modelslab", api_key=KEY)))
    assert code == exitcodes.EXIT_ENDPOINT
    assert "invalid api key" in stderr.lower()
    assert stats.requests <= config.concurrency  # no retry storm
    assert seconds < 10
    assert "not-the-key" not in stderr


@pytest.mark.slow
def test_modelslab_queue_full_waits_for_the_body_retry_after_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATION_API_KEY", KEY)
    config = _modelslab_job(tmp_path, "http://unused", n=120)
    config.concurrency, config.rpm = 12, None  # more than the plan's queue of 5: the host refuses the excess
    code, stderr, stats, _ = asyncio.run(_run(config, SimulatorConfig(
        profile="modelslab", queue=5, api_key=KEY, latency_ms=20, queue_retry_after=0.2)))
    assert code == exitcodes.EXIT_OK, stderr
    assert stats.queue_rejections > 0
    labels = pl.read_parquet(str(tmp_path / "out" / "labels" / "*.parquet"))
    assert labels.height == 120 and labels["status"].unique().to_list() == ["ok"]


@pytest.mark.slow
def test_modelslab_processing_replies_are_fetched_not_paid_again(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATION_API_KEY", KEY)
    config = _modelslab_job(tmp_path, "http://unused", n=40)
    code, stderr, stats, _ = asyncio.run(_run(config, SimulatorConfig(
        profile="modelslab", api_key=KEY, processing=0.5, processing_eta=0.05, seed=4)))
    assert code == exitcodes.EXIT_OK, stderr
    assert stats.processing_replies > 0 and stats.fetches >= stats.processing_replies
    assert stats.billed == 40  # each answer billed once, fetched however often
    report = orjson.loads((tmp_path / "out" / "cost_report.json").read_bytes())
    assert report["requests"] == 40


@pytest.fixture(autouse=True)
def _no_key_left_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODERATION_API_KEY", raising=False)  # run_pipeline(env_key=...) sets it


@pytest.mark.slow
def test_openrouter_choice_errors_are_retried_until_every_row_has_its_real_verdict(tmp_path: Path) -> None:
    clean_config = make_config(tmp_path / "clean", [_rows(tmp_path, 200)], policies=["spam"],
                               provider="openrouter")
    clean = run_pipeline(clean_config, SimulatorConfig(profile="openrouter"), env_key="sk-or-test-0123456789")
    config = make_config(tmp_path, [tmp_path / "in.jsonl"], policies=["spam"], provider="openrouter",
                         max_attempts=8)
    faulty = run_pipeline(config, SimulatorConfig(profile="openrouter", faults=Faults(choice_error=0.1), seed=9),
                          env_key="sk-or-test-0123456789")
    assert faulty.code == exitcodes.EXIT_OK, faulty.stderr
    assert faulty.stats.choice_errors > 0
    labels = faulty.labels().sort("id")
    assert labels["status"].unique().to_list() == ["ok"]
    assert labels["violation"].to_list() == clean.labels().sort("id")["violation"].to_list()
    assert labels["provider"].unique().to_list() == ["Simulator"]


def test_openrouter_content_filter_is_a_status_of_its_own(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 20)], policies=["spam"], provider="openrouter")
    result = run_pipeline(config, SimulatorConfig(profile="openrouter", faults=Faults(content_filter=1.0)),
                          env_key="sk-or-test-0123456789")
    assert result.code == exitcodes.EXIT_ROWS_FAILED
    assert result.labels()["status"].unique().to_list() == ["filtered"]


def test_openrouter_reported_cost_drives_the_report_beside_the_list_price(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 30)], policies=["spam"], provider="openrouter")
    result = run_pipeline(config, SimulatorConfig(profile="openrouter", input_price=0.15, output_price=0.6),
                          env_key="sk-or-test-0123456789")
    report = result.report()
    labels = result.labels()
    assert report["cost_usd"] == pytest.approx(labels["server_cost_usd"].sum())  # what the host charged
    assert report["list_price_cost_usd"] == pytest.approx(labels["cost_usd"].sum())  # beside it
    assert report["cost_usd"] > 1.05 * report["list_price_cost_usd"]  # the host charges double here
    assert report["cost_basis"] == "host-reported"
    assert "cost (host-reported)" in (result.out / "cost_report.md").read_text()


@pytest.mark.slow
def test_openrouter_in_flight_budget_402_waits_and_retries(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 60)], policies=["spam"], provider="openrouter", concurrency=8)
    result = run_pipeline(config, SimulatorConfig(profile="openrouter", in_flight_budget=3, latency_ms=10),
                          env_key="sk-or-test-0123456789")
    assert result.code == exitcodes.EXIT_OK, result.stderr
    assert result.stats.budget_refusals > 0
    assert result.labels().height == 60


def test_vllm_error_bodies_are_shown_as_their_message(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 5)], policies=["spam"], model="no-such-model")
    result = run_pipeline(config, SimulatorConfig(profile="vllm"))
    assert result.code == exitcodes.EXIT_ENDPOINT
    assert '{"object"' not in result.stderr and "no-such-model" in result.stderr


@pytest.mark.slow
def test_vllm_waiting_queue_is_held_near_its_target(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 300)], policies=["spam"], concurrency=64)
    result = run_pipeline(config, SimulatorConfig(profile="vllm", max_num_seqs=4, latency_ms=20))
    assert result.code == exitcodes.EXIT_OK, result.stderr
    assert result.stats.metrics_scrapes >= 1
    assert result.stats.max_waiting < 40  # without the gate, 60 requests would wait at once


def test_structured_output_sends_the_verdict_schema_and_junk_answers_disappear(tmp_path: Path) -> None:
    rows = _rows(tmp_path, 100)
    plain = make_config(tmp_path / "plain", [rows], policies=["spam"], invalid_output_retries=0)
    junky = SimulatorConfig(faults=Faults(junk_output=0.3), seed=11)
    without = run_pipeline(plain, junky)
    assert without.labels().filter(pl.col("status") == "invalid_output").height > 10
    schema = make_config(tmp_path / "schema", [rows], policies=["spam"], invalid_output_retries=0,
                         response_format="json_schema")
    with_schema = run_pipeline(schema, SimulatorConfig(faults=Faults(junk_output=0.3), seed=11))
    assert with_schema.code == exitcodes.EXIT_OK, with_schema.stderr
    assert with_schema.stats.constrained > 10
    assert with_schema.labels()["status"].unique().to_list() == ["ok"]


def test_modelslab_answers_fetched_after_processing_count_against_max_cost(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATION_API_KEY", KEY)
    config = _modelslab_job(tmp_path, "http://unused", n=100)
    config.max_cost = 0.001  # a sixth of what 100 rows cost
    code, stderr, stats, _ = asyncio.run(_run(config, SimulatorConfig(
        profile="modelslab", api_key=KEY, processing=1.0, processing_eta=0.01, seed=2)))
    assert stats.processing_replies > 0
    assert code == exitcodes.EXIT_BUDGET, stderr
    report = orjson.loads((tmp_path / "out" / "cost_report.json").read_bytes())
    assert 0 < report["cost_usd"] <= config.max_cost * 1.1


def test_openrouter_per_minute_cap_said_only_in_the_body_is_waited_for(tmp_path: Path) -> None:
    # no Retry-After header: the wait is the body's X-RateLimit-Reset (a Unix time in milliseconds)
    config = make_config(tmp_path, [_rows(tmp_path, 40)], policies=["spam"], provider="openrouter", concurrency=8)
    result = run_pipeline(config, SimulatorConfig(profile="openrouter", rpm=600, retry_after="none", latency_ms=5),
                          env_key="sk-or-test-0123456789")
    assert result.code == exitcodes.EXIT_OK, result.stderr
    assert result.labels()["status"].to_list() == ["ok"] * 40
    assert result.stats.rate_limited > 0  # the cap was met (how the body's reset is read: test_answers.py)


def test_openrouter_daily_cap_stops_the_run_resumable_instead_of_waiting_all_night(tmp_path: Path) -> None:
    config = make_config(tmp_path, [_rows(tmp_path, 30)], policies=["spam"], provider="openrouter", concurrency=4)
    started = time.monotonic()
    result = run_pipeline(config, SimulatorConfig(profile="openrouter", rpd=10, latency_ms=5),
                          env_key="sk-or-test-0123456789")
    assert time.monotonic() - started < 20
    assert result.code == exitcodes.EXIT_ENDPOINT, result.stderr
    assert "free-models-per-day" in result.stderr
    assert "quota is spent; it resets in" in result.stderr and "run the same command after that" in result.stderr
    assert "pausing" not in result.stderr  # it stops; it does not announce a 10-minute wait first
    statuses = result.labels()["status"].to_list()
    assert statuses.count("ok") == 10
    assert set(statuses) == {"ok", "aborted"}  # the rest unsent, sent again by the next run
    assert len(statuses) == 30
