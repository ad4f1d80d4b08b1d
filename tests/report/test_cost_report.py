from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.core.cost import Pricing
from pipeline.core.labels import label_row
from pipeline.core.records import Outcome, Status, Usage, Verdict
from pipeline.output.outdir import OutputDir
from pipeline.report.cost_report import build_report, label_stats, render_markdown, write_reports

PRICING = Pricing(0.075, 0.037, 0.30)
MODEL = "openai/gpt-oss-safeguard-20b"


def bill(run_id: str, policy: str, requests: int, prompt: int, completion: int, cost: float, *,
         estimated: int = 0, cached: int = 0, reasoning: int = 0, server_cost: float | None = None) -> dict:
    return {"out_id": "o1", "run_id": run_id, "policy": policy, "requests": requests,
            "estimated_requests": estimated, "prompt_tokens": prompt, "cached_prompt_tokens": cached,
            "completion_tokens": completion, "reasoning_tokens": reasoning, "cost_usd": cost,
            "server_cost_usd": server_cost}


BILLING = [
    bill("run-1", "spam", 3, 300, 60, 0.001, cached=30, reasoning=40),
    bill("run-1", "hate", 2, 200, 20, 0.0005, estimated=1, server_cost=0.0002),
    bill("run-2", "spam", 1, 100, 10, 0.00025, reasoning=5, server_cost=0.0001),
]
RUNS = [
    {"run_id": "run-1", "out_id": "o1", "outcome": "interrupted", "store_hits": 0, "duplicates": 1, "elapsed_s": 1.5},
    {"run_id": "run-2", "out_id": "o1", "outcome": "ok", "store_hits": 4, "duplicates": 2, "elapsed_s": 0.5},
]


def label(row_id: str, row_number: int, policy: str, status: Status, *, violation: int | None = None,
          latency: float = 0.0, source: str = "api") -> tuple:
    outcome = Outcome(status, verdict=Verdict(violation) if violation is not None else None,
                      usage=Usage(prompt_tokens=10, completion_tokens=2), latency_ms=latency, attempts=1)
    return label_row(id=row_id, policy=policy, outcome=outcome, model=MODEL, policy_version="v1",
                     reasoning_effort="low", output_format="binary", source=source, fingerprint=b"\x01\x02",
                     row_number=row_number, input_file="in.jsonl", run_id="run-1")


@pytest.fixture
def labels_dir(tmp_path: Path) -> Path:
    """Four input rows (ids a, b, a, c) x two policies, in two shards."""
    out = OutputDir(tmp_path / "out")
    shard0 = [
        label("a", 0, "spam", Status.OK, violation=1, latency=100.0),
        label("a", 0, "hate", Status.OK, violation=0, latency=200.0),
        label("b", 1, "spam", Status.OK, violation=0, latency=300.0),
        label("b", 1, "hate", Status.FAILED, latency=400.0),
    ]
    shard1 = [
        label("a", 2, "spam", Status.OK, violation=1, latency=9999.0, source="store"),
        label("a", 2, "hate", Status.OK, violation=0, latency=8888.0, source="duplicate"),
        label("c", 3, "spam", Status.SKIPPED_EMPTY, source="none", latency=7777.0),
        label("c", 3, "hate", Status.OK, violation=1, latency=500.0),
    ]
    out.write_shard(0, shard0, input_rows=2, unsent=0)
    out.write_shard(1, shard1, input_rows=2, unsent=0)
    return out.labels


def report_for(labels: Path, provider: str = "groq", **kw: Any) -> dict[str, Any]:
    return build_report(billing=kw.get("billing", BILLING), runs=kw.get("runs", RUNS), labels_dir=labels,
                        pricing=PRICING, provider=provider, model=MODEL)


def test_totals_sum_every_billing_row(labels_dir: Path) -> None:
    report = report_for(labels_dir)
    assert report["requests"] == 6
    assert report["estimated_requests"] == 1
    assert report["prompt_tokens"] == 600
    assert report["cached_prompt_tokens"] == 30
    assert report["completion_tokens"] == 90
    assert report["reasoning_tokens"] == 45
    assert report["cost_usd"] == pytest.approx(0.00175)
    assert report["usage_estimated"] is True
    assert report["server_reported_cost_usd"] == pytest.approx(0.0003)
    assert report["pricing"] == {"input_per_million": 0.075, "cached_input_per_million": 0.037,
                                 "output_per_million": 0.30}
    assert (report["provider"], report["model"], report["simulated"]) == ("groq", MODEL, False)


def test_per_policy_sums_billing_and_counts_violations_of_ok_labels(labels_dir: Path) -> None:
    per_policy = report_for(labels_dir)["per_policy"]
    assert list(per_policy) == ["hate", "spam"]
    spam, hate = per_policy["spam"], per_policy["hate"]
    assert (spam["requests"], spam["prompt_tokens"], spam["completion_tokens"]) == (4, 400, 70)
    assert (spam["reasoning_tokens"], spam["cached_prompt_tokens"]) == (45, 30)
    assert spam["cost_usd"] == pytest.approx(0.00125)
    assert (hate["requests"], hate["prompt_tokens"], hate["estimated_requests"]) == (2, 200, 1)
    assert hate["cost_usd"] == pytest.approx(0.0005)
    assert spam["violations"] == {"0": 1, "1": 2}
    assert hate["violations"] == {"0": 2, "1": 1}


def test_policy_with_labels_but_no_billing_is_listed_with_zero_cost(labels_dir: Path) -> None:
    report = report_for(labels_dir, billing=[b for b in BILLING if b["policy"] == "spam"])
    hate = report["per_policy"]["hate"]
    assert hate["requests"] == 0 and hate["cost_usd"] == 0.0
    assert hate["violations"] == {"0": 2, "1": 1}


def test_per_run_breakdown_adds_requests_and_cost_to_each_run(labels_dir: Path) -> None:
    runs = report_for(labels_dir)["runs"]
    assert [r["run_id"] for r in runs] == ["run-1", "run-2"]
    assert (runs[0]["requests"], runs[1]["requests"]) == (5, 1)
    assert runs[0]["cost_usd"] == pytest.approx(0.0015)
    assert runs[1]["cost_usd"] == pytest.approx(0.00025)
    assert runs[0]["outcome"] == "interrupted" and runs[1]["store_hits"] == 4


def test_run_without_billing_shows_zero_requests(labels_dir: Path) -> None:
    runs = [*RUNS, {"run_id": "run-3", "outcome": "ok", "store_hits": 8, "duplicates": 0, "elapsed_s": 0.1}]
    report = report_for(labels_dir, runs=runs)
    assert report["runs"][2]["requests"] == 0 and report["runs"][2]["cost_usd"] == 0.0
    assert report["store_hits"] == 12


def test_store_hits_and_duplicates_are_summed_over_runs(labels_dir: Path) -> None:
    report = report_for(labels_dir)
    assert report["store_hits"] == 4
    assert report["duplicates"] == 3
    assert report["rows_per_second"] == 2.0  # 4 rows in 1.5 + 0.5 s


def test_statuses_rows_labels_and_duplicate_ids_come_from_the_shards(labels_dir: Path) -> None:
    report = report_for(labels_dir)
    assert report["statuses"] == {"failed": 1, "ok": 6, "skipped_empty": 1}
    assert report["rows"] == 4
    assert report["labels"] == 8
    assert report["duplicate_ids"] == 1  # row 2 reuses id "a"


def test_latency_percentiles_count_only_paid_calls(labels_dir: Path) -> None:
    latency = report_for(labels_dir)["latency_ms"]
    assert latency == {"p50": 300.0, "p95": 500.0}


def test_cost_per_1000_rows(labels_dir: Path) -> None:
    assert report_for(labels_dir)["cost_per_1000_rows"] == pytest.approx(0.00175 / 4 * 1000)


def test_empty_labels_dir_gives_zeros(tmp_path: Path) -> None:
    report = build_report(billing=[], runs=[], labels_dir=tmp_path / "missing", pricing=PRICING,
                          provider="openai", model=MODEL)
    assert (report["rows"], report["labels"], report["duplicate_ids"]) == (0, 0, 0)
    assert (report["requests"], report["cost_usd"], report["cost_per_1000_rows"]) == (0, 0.0, 0.0)
    assert report["statuses"] == {} and report["per_policy"] == {} and report["runs"] == []
    assert report["latency_ms"] == {"p50": None, "p95": None}
    assert report["rows_per_second"] is None
    assert report["usage_estimated"] is False and report["server_reported_cost_usd"] is None
    assert label_stats(tmp_path)["rows"] == 0


def test_shards_without_paid_calls_have_no_latency(tmp_path: Path) -> None:
    out = OutputDir(tmp_path / "out")
    out.write_shard(0, [label("a", 0, "spam", Status.OK, violation=0, latency=50.0, source="store")],
                    input_rows=1, unsent=0)
    assert label_stats(out.labels)["latency_ms"] == {"p50": None, "p95": None}


def test_markdown_shows_the_totals(labels_dir: Path) -> None:
    text = render_markdown(report_for(labels_dir))
    assert text.startswith("# Moderation cost report\n")
    assert f"Model `{MODEL}` via `groq`" in text
    assert "| rows | 4 |" in text
    assert "| labels (rows x policies) | 8 |" in text
    assert "| billed requests | 6 |" in text
    assert "| prompt tokens (cached) | 600 (30) |" in text
    assert "| completion tokens (reasoning) | 90 (45) |" in text
    assert "| cost (list price) | $0.001750 |" in text
    assert "| cost per 1,000 rows | $0.437500 |" in text
    assert "| served from the store at no cost | 4 |" in text
    assert "| latency p50 / p95 (ms) | 300 / 500 |" in text
    assert "| spam | 4 | 400 | 70 | $0.001250 | 2 | 1 |" in text
    assert "| failed | 1 |" in text
    assert "| run-1 | interrupted | 5 | $0.001500 | 0 | 1.5 |" in text
    assert "estimated" in text
    assert "simulator" not in text.lower()


def test_markdown_names_the_simulator_only_for_simulator_runs(labels_dir: Path) -> None:
    text = render_markdown(report_for(labels_dir, provider="simulator"))
    assert report_for(labels_dir, provider="simulator")["simulated"] is True
    assert "built-in simulator" in text and "keyword rule" in text
    for provider in ("openai", "openrouter", "groq", "modelslab"):
        assert "simulator" not in render_markdown(report_for(labels_dir, provider=provider)).lower()


def test_markdown_of_an_empty_report_uses_dashes(tmp_path: Path) -> None:
    report = build_report(billing=[], runs=[], labels_dir=tmp_path, pricing=PRICING, provider="openai", model=MODEL)
    text = render_markdown(report)
    assert "| rows/s | - |" in text
    assert "| latency p50 / p95 (ms) | - / - |" in text


def test_write_reports_writes_json_and_markdown(labels_dir: Path, tmp_path: Path) -> None:
    report = report_for(labels_dir)
    write_reports(report, tmp_path)
    assert orjson.loads((tmp_path / "cost_report.json").read_bytes()) == report
    assert (tmp_path / "cost_report.md").read_text() == render_markdown(report)


# ---- the report against what the simulator billed, over loopback -----------------------------------

PRICES = {"input_per_million": 0.075, "cached_input_per_million": 0.0375, "output_per_million": 0.30}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_cost_report_equals_what_the_host_billed_under_the_eight_way_mix_with_odd_details_and_content_parts(
        tmp_path: Path, seed: int) -> None:
    from support import make_config, run_pipeline, write_jsonl

    from pipeline.simulator import Faults, SimulatorConfig
    from pipeline.simulator.config import EIGHT_WAY_MIX

    words = ["free money click here", "lovely weather today", "buy now", "you people are vermin", "nice"]
    rows = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"{words[i % 5]} {i} " + "x" * (i % 41)}
                                               for i in range(1_500)])
    config = make_config(tmp_path, [rows], concurrency=16, max_attempts=6, **PRICES)
    faults = Faults.mix(**EIGHT_WAY_MIX, odd_details=0.05, odd_content=0.02, content_parts=0.01, hang_seconds=0.3)
    result = run_pipeline(config, SimulatorConfig(faults=faults, seed=seed))
    report, billed = result.report(), result.stats
    assert billed.faults["odd_details"] > 50 and billed.faults["content_parts"] > 10, billed.faults
    assert (report["requests"], report["prompt_tokens"], report["cached_prompt_tokens"],
            report["completion_tokens"]) == (billed.billed, billed.prompt_tokens, billed.cached_tokens,
                                             billed.completion_tokens)
    usage = Usage(billed.prompt_tokens, billed.cached_tokens, billed.completion_tokens)
    assert report["cost_usd"] == pytest.approx(Pricing(*PRICES.values()).cost(usage), abs=1e-8)
    assert report["statuses"].get("ok", 0) + report["statuses"].get("invalid_output", 0) == 3_000


@pytest.mark.slow
def test_an_answer_in_content_parts_is_counted_once_and_never_asked_again(tmp_path: Path) -> None:
    from support import make_config, run_pipeline, write_jsonl

    from pipeline.simulator import Faults, SimulatorConfig

    rows = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"buy now {i} " + "y" * (i % 53)}
                                               for i in range(3_000)])
    config = make_config(tmp_path, [rows], policies=["spam"], concurrency=16, **PRICES)
    result = run_pipeline(config, SimulatorConfig(faults=Faults(content_parts=0.01), seed=4))
    report, billed = result.report(), result.stats
    assert billed.faults["content_parts"] > 10
    assert report["requests"] == billed.billed == billed.requests == 3_000  # each text paid for once
    assert (report["prompt_tokens"], report["completion_tokens"]) == (billed.prompt_tokens, billed.completion_tokens)
