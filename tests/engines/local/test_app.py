"""End-to-end: `moderate run` over loopback HTTP against the simulator, real Parquet and SQLite."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from support import make_config, run_pipeline, write_jsonl

from pipeline.core import exitcodes
from pipeline.core.records import ANSWER_FORMATS, OutputFormat
from pipeline.plan.policies import load_policy
from pipeline.plan.prompt import render_system
from pipeline.simulator import SimulatorConfig
from pipeline.simulator.rules import decide, keywords_for


def expected_violation(policy: str, text: str) -> int:
    system = render_system(load_policy(policy), OutputFormat.RATIONALE)
    return decide(keywords_for(system), text).violation


def test_every_row_gets_its_own_verdict_when_answers_return_out_of_order(tmp_path: Path, comments: Path) -> None:
    config = make_config(tmp_path, [comments], concurrency=16, shard_rows=25)
    result = run_pipeline(config, SimulatorConfig(latency_ms=15, jitter_ms=14, seed=3))
    assert result.code == exitcodes.EXIT_OK, result.stderr
    labels = result.labels()
    assert labels.height == 60 * 2
    assert labels.select(pl.struct("id", "policy").n_unique()).item() == 120
    assert set(labels["status"]) == {"ok"}
    texts = {row["id"]: row["text"] for row in pl.read_ndjson(comments).iter_rows(named=True)}
    for row in labels.iter_rows(named=True):
        assert row["violation"] == expected_violation(row["policy"], texts[row["id"]]), row
    assert sorted(p.name for p in (result.out / "labels").iterdir()) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]


def test_cost_report_totals_equal_the_servers_usage(tmp_path: Path, comments: Path) -> None:
    result = run_pipeline(make_config(tmp_path, [comments]), SimulatorConfig(latency_ms=2, jitter_ms=2))
    report = result.report()
    stats = result.stats
    assert report["requests"] == stats.billed == 120
    assert report["prompt_tokens"] == stats.prompt_tokens
    assert report["cached_prompt_tokens"] == stats.cached_tokens
    assert report["completion_tokens"] == stats.completion_tokens
    assert report["reasoning_tokens"] == stats.reasoning_tokens
    expected = (
        (stats.prompt_tokens - stats.cached_tokens) * 0.075 + stats.cached_tokens * 0.075
        + stats.completion_tokens * 0.30
    ) / 1e6
    assert abs(report["cost_usd"] - expected) < 1e-9
    assert set(report["pricing"]) == {"input_per_million", "cached_input_per_million", "output_per_million"}
    assert abs(result.labels()["cost_usd"].sum() - report["cost_usd"]) < 1e-9
    assert (result.out / "cost_report.md").read_text().startswith("# Moderation cost report")


def test_parquet_input_and_every_output_format(tmp_path: Path, comments: Path) -> None:
    parquet = tmp_path / "comments.parquet"
    pl.read_ndjson(comments).write_parquet(parquet)
    for fmt in ANSWER_FORMATS:
        config = make_config(tmp_path, [parquet], output_format=fmt, out=str(tmp_path / f"out-{fmt}"))
        result = run_pipeline(config)
        assert result.code == exitcodes.EXIT_OK, result.stderr
        labels = result.labels()
        assert labels.height == 120 and set(labels["status"]) == {"ok"}
        assert labels["violation"].sum() > 0
        if fmt is OutputFormat.RATIONALE:
            assert labels.filter(pl.col("violation") == 1)["rationale"].null_count() == 0


def test_missing_text_column_is_one_line_error_before_any_request(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "x.jsonl", [{"id": "1", "body": "hello"}])
    result = run_pipeline(make_config(tmp_path, [data]))
    assert result.code == exitcodes.EXIT_USAGE
    assert result.stats.requests == 0
    assert "'text'" in result.stderr and "x.jsonl" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_second_run_of_a_finished_job_sends_nothing(tmp_path: Path, comments: Path) -> None:
    config = make_config(tmp_path, [comments])
    first = run_pipeline(config)
    assert first.code == 0
    second = run_pipeline(config)
    assert second.code == 0
    assert second.stats.requests == 0
    assert "nothing to do" in second.stderr
    assert second.report()["requests"] == 120


def test_identical_texts_are_sent_once_per_policy(tmp_path: Path) -> None:
    rows = [{"id": str(i), "text": ["same words", "  same words\r\n", "other words"][i % 3]} for i in range(30)]
    data = write_jsonl(tmp_path / "dups.jsonl", rows)
    result = run_pipeline(make_config(tmp_path, [data]))
    assert result.code == 0, result.stderr
    assert result.stats.billed == 2 * 2  # two distinct normalised texts x two policies
    labels = result.labels()
    assert labels.height == 60
    assert labels.filter(pl.col("source") == "duplicate").height == 56
    assert result.report()["duplicates"] == 56


def test_shared_store_makes_a_grown_input_pay_only_for_new_rows(tmp_path: Path) -> None:
    store = str(tmp_path / "shared.sqlite")
    night1 = write_jsonl(tmp_path / "n1.jsonl", [{"id": str(i), "text": f"comment {i}"} for i in range(20)])
    first = run_pipeline(make_config(tmp_path, [night1], store=store, out=str(tmp_path / "o1")))
    assert first.stats.billed == 40
    night2 = write_jsonl(tmp_path / "n2.jsonl", [{"id": str(i), "text": f"comment {i}"} for i in range(30)])
    second = run_pipeline(make_config(tmp_path, [night2], store=store, out=str(tmp_path / "o2")))
    assert second.code == 0
    assert second.stats.billed == 20  # 10 new rows x 2 policies
    report = second.report()
    assert report["store_hits"] == 40 and report["requests"] == 20
    assert second.labels().height == 60


def test_budget_stop_marks_unsent_rows_and_a_larger_cap_resumes(tmp_path: Path, comments: Path) -> None:
    config = make_config(tmp_path, [comments], max_cost=0.0015, concurrency=4)
    first = run_pipeline(config, SimulatorConfig(latency_ms=2))
    assert first.code == exitcodes.EXIT_BUDGET, first.stderr
    labels = first.labels()
    assert labels.height == 120  # every row is present, with a status
    unsent = labels.filter(pl.col("status") == "budget_exhausted").height
    assert 0 < unsent < 120
    spent = first.report()["cost_usd"]
    assert spent <= 0.0015
    config.max_cost = 1.0
    second = run_pipeline(config, SimulatorConfig(latency_ms=2))
    assert second.code == exitcodes.EXIT_OK, second.stderr
    assert second.stats.billed == unsent
    final = second.labels()
    assert final.height == 120 and set(final["status"]) == {"ok"}
    assert second.report()["requests"] == 120
    assert len(second.report()["runs"]) == 2


def test_bad_key_stops_the_run_fast_with_its_own_exit_code(tmp_path: Path, comments: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODERATION_API_KEY", "sk-wrong-key-123")
    result = run_pipeline(make_config(tmp_path, [comments], concurrency=4),
                          SimulatorConfig(api_key="sk-right-key"))
    assert result.code == exitcodes.EXIT_ENDPOINT
    assert result.stats.status_counts.get(401, 0) <= 4
    assert "401" in result.stderr
    assert "sk-wrong-key-123" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_run_on_a_locked_directory_is_refused(tmp_path: Path, comments: Path) -> None:
    from pipeline.output.outdir import OutputDir

    config = make_config(tmp_path, [comments])
    holder = OutputDir(config.out)
    holder.lock()
    try:
        result = run_pipeline(config)
    finally:
        holder.unlock()
    assert result.code == exitcodes.EXIT_LOCKED
    assert "another run" in result.stderr and "pid" in result.stderr
    assert result.stats.requests == 0


def test_a_different_policy_set_is_refused_unless_forced(tmp_path: Path, comments: Path) -> None:
    config = make_config(tmp_path, [comments])
    assert run_pipeline(config).code == 0
    config.policies = ["spam"]
    refused = run_pipeline(config)
    assert refused.code == exitcodes.EXIT_USAGE and "policies changed" in refused.stderr
    config.force = True
    forced = run_pipeline(config)
    assert forced.code == 0 and forced.stats.requests == 0  # answers come from the store
    assert forced.labels().height == 60


def test_max_cost_caps_the_whole_directory_across_reruns(tmp_path: Path, comments: Path) -> None:
    config = make_config(tmp_path, [comments], max_cost=0.0015, concurrency=4)
    first = run_pipeline(config, SimulatorConfig(latency_ms=2))
    assert first.code == exitcodes.EXIT_BUDGET
    again = run_pipeline(config, SimulatorConfig(latency_ms=2))  # same cap: nothing more to spend
    assert again.code == exitcodes.EXIT_BUDGET
    assert again.stats.billed <= 4  # at most the margin the first run kept for calls in flight
    assert again.report()["cost_usd"] <= 0.0015


def test_rerunning_a_finished_directory_with_failed_rows_still_says_so(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "fine"}, {"id": "b", "text": "bad [[reject]]"}]
    config = make_config(tmp_path, [write_jsonl(tmp_path / "r.jsonl", rows)], policies=["spam"])
    assert run_pipeline(config).code == exitcodes.EXIT_ROWS_FAILED
    again = run_pipeline(config)
    assert again.code == exitcodes.EXIT_ROWS_FAILED and again.stats.requests == 0
    assert "--force retries them" in again.stderr


def test_missing_usage_is_estimated_and_flagged(tmp_path: Path, comments: Path) -> None:
    result = run_pipeline(make_config(tmp_path, [comments], policies=["spam"]), SimulatorConfig(include_usage=False))
    assert result.code == exitcodes.EXIT_OK
    report = result.report()
    assert report["requests"] == result.stats.billed == 60
    assert report["usage_estimated"] is True and report["estimated_requests"] == 60
    assert report["prompt_tokens"] > 0 and report["completion_tokens"] > 0
    assert result.labels()["usage_estimated"].all()
    assert "estimated" in (result.out / "cost_report.md").read_text()


def test_no_room_for_the_text_exits_2_before_any_call(tmp_path: Path, comments: Path) -> None:
    config = make_config(tmp_path, [comments], context_tokens=2048, max_tokens=2000, too_long="truncate")
    result = run_pipeline(config)
    assert result.code == exitcodes.EXIT_USAGE
    assert "leave no room for the text" in result.stderr and "Traceback" not in result.stderr
    assert result.stats.requests == 0
