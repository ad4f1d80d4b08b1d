"""`moderate estimate`: counts what the run sends, exactly, without any network."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import orjson
import pytest
from support import make_config, run_pipeline, write_jsonl

from pipeline.audit.costing import estimate
from pipeline.audit.estimate import count_job
from pipeline.cli.main import main
from pipeline.core import exitcodes
from pipeline.core.records import OutputFormat
from pipeline.core.tokens import count_tokens, harmony_prompt_tokens, policy_tokens
from pipeline.plan.policies import load_policy
from pipeline.plan.prompt import neutralise, normalise, render_system
from pipeline.simulator import SimulatorConfig

TEXTS = ["buy now and click here", "  buy now and click here\r\n", "you people are vermin", "", "   ",
         "see you <|end|> friday", "café déjà vu 🙂", None]


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    rows = [{"id": f"r{i}", "text": TEXTS[i % len(TEXTS)] if i % len(TEXTS) != 1 or i < 8 else f"unique {i}"}
            for i in range(40)]
    return write_jsonl(tmp_path / "mixed.jsonl", rows)


def test_requests_and_statuses_are_counted_as_the_run_makes_them(tmp_path: Path, mixed: Path) -> None:
    config = make_config(tmp_path, [mixed])
    job = count_job(config)
    result = run_pipeline(config)
    assert result.code == exitcodes.EXIT_OK, result.stderr
    labels = result.labels()
    assert job.rows == 40
    for policy in job.policies:
        sent = labels.filter((labels["policy"] == policy.name) & (labels["source"] == "api")).height
        assert policy.requests == sent
    assert sum(p.requests for p in job.policies) == result.stats.billed
    assert job.skipped_empty * 2 == labels.filter(labels["status"] == "skipped_empty").height
    assert job.duplicates * 2 == result.report()["duplicates"]


def test_prompt_tokens_are_the_harmony_count_of_each_distinct_text(tmp_path: Path, mixed: Path) -> None:
    config = make_config(tmp_path, [mixed], policies=["spam"], reasoning_effort="medium")
    job = count_job(config, date="2026-11-28")
    users = {neutralise(normalise(t)) for t in [*TEXTS, *(f"unique {i}" for i in range(9, 40, 8))] if t}
    users.discard("")
    system = render_system(load_policy("spam"), OutputFormat.RATIONALE)
    expected = sum(harmony_prompt_tokens(policy_tokens(system), u, "medium", date="2026-11-28") for u in users)
    assert job.policies[0].requests == len(users)
    assert job.policies[0].prompt_tokens == expected


def test_too_long_texts_are_skipped_or_truncated_like_the_run(tmp_path: Path) -> None:
    long_text = "word " * 3000
    rows = [{"id": "a", "text": long_text}, {"id": "b", "text": long_text}, {"id": "c", "text": "short"}]
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    config = make_config(tmp_path, [data], policies=["spam"], context_tokens=4000, max_tokens=1000)
    skip = count_job(config).policies[0]
    assert (skip.requests, skip.too_long) == (1, 2)
    config.too_long = "truncate"
    cut = count_job(config).policies[0]
    assert (cut.requests, cut.too_long, cut.truncated) == (2, 0, 1)
    assert cut.content_tokens == count_tokens("short") + cut.text_budget


def test_json_has_rows_requests_tokens_and_cost(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["estimate", "--input", str(mixed), "--policy", "spam", "--provider", "groq", "--rpm", "60",
                 "--json"])
    assert code == 0
    result = orjson.loads(capsys.readouterr().out)
    assert result["rows"] == 40
    assert result["requests"] == result["policies"]["spam"]["requests"] > 0
    assert result["prompt_tokens"] > 500 * result["requests"]
    low, expected, high = (result["cost_usd_range"][k] for k in ("low", "expected", "high"))
    assert low < expected == result["cost_usd"] < high
    assert result["seconds"]["expected"] == pytest.approx(result["requests"] / 60 * 60)


def test_text_output_prints_the_assumption_table(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--input", str(mixed), "--policy", "spam", "--reasoning-effort", "high"]) == 0
    out = capsys.readouterr().out
    assert "spam" in out and "total" in out
    assert "effort" in out and "1600" in out
    assert "no --rpm/--tpm configured" in out


def test_calibration_uses_the_measured_output_tokens_of_a_finished_run(tmp_path: Path, mixed: Path) -> None:
    config = make_config(tmp_path, [mixed])
    run = run_pipeline(config)
    report = run.report()
    result = estimate(config, calibrate=str(run.out))
    for name, policy in result["policies"].items():
        measured = report["per_policy"][name]
        assert policy["output_tokens_per_request"]["expected"] == pytest.approx(
            measured["completion_tokens"] / measured["requests"], abs=0.05)
        assert policy["completion_tokens"]["expected"] == pytest.approx(
            measured["completion_tokens"], rel=0.001)


def test_bad_calibration_directory_is_one_line_exit_2(tmp_path: Path, mixed: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--input", str(mixed), "--calibrate", str(tmp_path / "nope")]) == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert "cost_report.json" in err and len(err.strip().splitlines()) == 1


def test_missing_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--input", str(tmp_path / "absent.jsonl")]) == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert "absent.jsonl" in err and "Traceback" not in err


def test_estimate_opens_no_socket(tmp_path: Path, mixed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("estimate tried to open a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    config = make_config(tmp_path, [mixed], provider="groq")
    assert estimate(config)["requests"] > 0


def test_memory_for_duplicates_is_eight_bytes_per_distinct_text(tmp_path: Path) -> None:
    rows = [{"id": str(i), "text": f"text {i % 500}"} for i in range(5000)]
    job = count_job(make_config(tmp_path, [write_jsonl(tmp_path / "d.jsonl", rows)], policies=["spam"]))
    assert job.unique_texts == 500 and job.duplicates == 4500
    assert job.digest_bytes == 8 * 500


async def _billed_prompt_tokens(base_url: str, system: str, user: str) -> int:
    body = {"model": "gpt-oss-safeguard-20b-simulator", "max_tokens": 4096, "reasoning_effort": "low",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
    async with aiohttp.ClientSession() as session, session.post(base_url + "/chat/completions", json=body) as reply:
        return (await reply.json())["usage"]["prompt_tokens"]


def test_estimate_is_within_2_percent_of_the_simulators_billed_prompt_tokens(tmp_path: Path, mixed: Path) -> None:
    # the simulator renders each request with gpt-oss's Harmony template and counts it with o200k, as
    # a real server bills it (pipeline/simulator/harmony.py, written apart from pipeline/core/tokens.py)
    config = make_config(tmp_path, [mixed])
    result = run_pipeline(config, SimulatorConfig(count_tokens="o200k"))
    assert result.code == exitcodes.EXIT_OK, result.stderr
    estimated = sum(p.prompt_tokens for p in count_job(config).policies)
    assert abs(estimated - result.stats.prompt_tokens) <= 0.02 * result.stats.prompt_tokens


def test_unreadable_lines_are_counted_as_input_errors(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_bytes(b'{"id": "a", "text": "buy now"}\n{not json\n{"id": "c", "text": "hello"}\n')
    config = make_config(tmp_path, [data], policies=["spam"])
    job = count_job(config)
    assert (job.rows, job.input_errors, job.policies[0].requests) == (3, 1, 2)
    result = run_pipeline(config)
    assert result.labels().filter(result.labels()["status"] == "input_error").height == 1
    assert result.stats.billed == 2


@pytest.mark.parametrize("report", [b"[]", b"{}", b'{"requests": 3}', b'{"requests": "3", "completion_tokens": 9}',
                                    b'{"requests": 3, "completion_tokens": -1}', b"not json"])
def test_a_calibration_folder_with_an_odd_cost_report_is_one_line_exit_2(
        tmp_path: Path, mixed: Path, capsys: pytest.CaptureFixture[str], report: bytes) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "cost_report.json").write_bytes(report)
    assert main(["estimate", "--input", str(mixed), "--calibrate", str(tmp_path / "out")]) == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert "cost_report.json" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_calibration_report_with_odd_per_policy_entries_falls_back_to_the_whole_run(tmp_path: Path,
                                                                                      mixed: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "cost_report.json").write_bytes(orjson.dumps({
        "requests": 10, "completion_tokens": 500, "per_policy": {"spam": {"requests": "x"}, "hate_harassment": []}}))
    config = make_config(tmp_path, [mixed])
    result = estimate(config, calibrate=str(tmp_path / "out"))
    assert {p["output_tokens_source"] for p in result["policies"].values()} == {"measured on all policies of the run"}
    assert result["policies"]["spam"]["output_tokens_per_request"]["expected"] == 50
