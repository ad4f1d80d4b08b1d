"""``moderate simulate --batch``: an OpenAI batch input file answered offline, faults included."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.simulator import Faults, SimulatorConfig, SimulatorStats
from pipeline.simulator import cli as simulator_cli
from pipeline.simulator.batch import BatchInputError, run_batch
from tests.simulator.loopback import MODEL, messages


def write_requests(path: Path, users: list[str], **body: Any) -> Path:
    lines = [{"custom_id": f"row-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "messages": messages(user), "max_tokens": 4000, **body}}
             for i, user in enumerate(users)]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_every_line_gets_a_result_in_openai_batch_shape(tmp_path: Path) -> None:
    source = write_requests(tmp_path / "requests.jsonl", ["BUY NOW", "hello", "click here"])
    stats = SimulatorStats()
    summary = run_batch(SimulatorConfig(), source, tmp_path / "results.jsonl", stats=stats)
    results = read(tmp_path / "results.jsonl")
    assert (summary.lines, summary.succeeded, summary.failed) == (3, 3, 0)
    assert [r["custom_id"] for r in results] == ["row-0", "row-1", "row-2"]
    for line in results:
        assert set(line) == {"id", "custom_id", "response", "error"} and line["error"] is None
        assert line["id"].startswith("batch_req_") and line["response"]["request_id"].startswith("req_")
        assert line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["usage"]["total_tokens"] > 0
    verdicts = [orjson.loads(r["response"]["body"]["choices"][0]["message"]["content"])["violation"]
                for r in results]
    assert verdicts == [1, 0, 1]
    assert stats.billed == 3 and stats.prompt_tokens == sum(r["response"]["body"]["usage"]["prompt_tokens"]
                                                            for r in results)
    assert not (tmp_path / "results.jsonl.partial").exists()


def without_timestamps(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for line in lines:
        if line["response"] and isinstance(line["response"]["body"], dict):
            line["response"]["body"].pop("created", None)
    return lines


def test_faults_make_error_lines_and_billed_junk_deterministically(tmp_path: Path) -> None:
    source = write_requests(tmp_path / "requests.jsonl", [f"text {i}" for i in range(300)])
    faults = Faults(error_5xx=0.1, reset=0.1, hang=0.05, rate_limited=0.05, html_error=0.05, junk_output=0.1)
    config = SimulatorConfig(faults=faults, seed=7)
    summary = run_batch(config, source, tmp_path / "out.jsonl", tmp_path / "errors.jsonl")
    ok, failed = read(tmp_path / "out.jsonl"), read(tmp_path / "errors.jsonl")
    assert summary.lines == 300 and len(ok) == summary.succeeded and len(failed) == summary.failed
    assert {r["custom_id"] for r in ok + failed} == {f"row-{i}" for i in range(300)}
    statuses = {r["response"]["status_code"] for r in failed if r["response"]}
    assert statuses >= {429, 502} and statuses & {500, 503, 504}
    assert all(isinstance(r["response"]["body"]["error"], dict) for r in failed if r["response"])
    no_answer = [r for r in failed if r["response"] is None]
    assert no_answer and {r["error"]["code"] for r in no_answer} == {"server_error", "request_timeout"}
    junk = [r for r in ok if "lorem ipsum" in r["response"]["body"]["choices"][0]["message"]["content"]]
    assert 10 < len(junk) < 60 and all(r["response"]["body"]["usage"]["completion_tokens"] > 0 for r in junk)
    run_batch(config, source, tmp_path / "again.jsonl", tmp_path / "again-errors.jsonl")
    assert without_timestamps(read(tmp_path / "again.jsonl")) == without_timestamps(ok)
    assert read(tmp_path / "again-errors.jsonl") == failed


def test_without_an_errors_file_failures_stay_in_the_results_like_vllm_run_batch(tmp_path: Path) -> None:
    source = write_requests(tmp_path / "requests.jsonl", ["a", "b"])
    source.write_bytes(source.read_bytes() + orjson.dumps({
        "custom_id": "bad-model", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o", "messages": messages("c")}}) + b"\n")
    summary = run_batch(SimulatorConfig(profile="vllm"), source, tmp_path / "results.jsonl")
    results = read(tmp_path / "results.jsonl")
    assert summary.failed == 1 and len(results) == 3
    bad = results[2]
    assert bad["id"].startswith("vllm-") and bad["response"]["request_id"].startswith("vllm-batch-")
    assert bad["response"]["status_code"] == 404 and bad["response"]["body"]["object"] == "error"


def test_a_line_that_is_not_json_names_file_and_line(tmp_path: Path) -> None:
    source = write_requests(tmp_path / "requests.jsonl", ["a"])
    source.write_bytes(source.read_bytes() + b"{oops\n")
    with pytest.raises(BatchInputError, match=r"requests\.jsonl:2: not JSON"):
        run_batch(SimulatorConfig(), source, tmp_path / "results.jsonl")
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "results.jsonl.partial").exists()


def parse_cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    simulator_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_batch_writes_results_and_reports_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_requests(tmp_path / "requests.jsonl", ["BUY NOW", "hi"])
    out = tmp_path / "results.jsonl"
    assert simulator_cli.main(parse_cli("--batch", str(source), "-o", str(out), "--seed", "3")) == 0
    assert len(read(out)) == 2 and "2 lines, 2 succeeded" in capsys.readouterr().err
    source.write_bytes(b"not json\n")
    assert simulator_cli.main(parse_cli("--batch", str(source), "-o", str(out))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "requests.jsonl:1" in err and "Traceback" not in err
    assert simulator_cli.main(parse_cli("--batch", str(source))) == 2
