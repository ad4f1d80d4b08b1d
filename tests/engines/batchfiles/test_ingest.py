"""Batch files end to end: prepare -> a host answers the file -> ingest, compared with an online run."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest
from support import LEAKED_KEY, SIM_MODEL, key_spellings, leaks, make_config, run_pipeline, write_jsonl

from pipeline.call.redact import Redactor
from pipeline.cli.main import main
from pipeline.core import exitcodes
from pipeline.core.cost import Pricing
from pipeline.core.records import Status
from pipeline.engines.batchfiles.ingest import read_answer
from pipeline.engines.batchfiles.lines import ResultLine


def answer_batch_file(requests: list[Path], results: Path, *faults: str, errors: Path | None = None) -> int:
    """``moderate simulate --batch``: the simulator answers the files offline; returns the lines answered."""
    lines = 0
    with open(results, "wb") as out:
        for number, path in enumerate(requests):
            part = results.with_name(f"{results.stem}.{number}.jsonl")
            extra = ["--errors", str(errors)] if errors is not None else []
            assert main(["simulate", "--batch", str(path), "-o", str(part), *extra, *faults]) == 0
            out.write(part.read_bytes())
            lines += len(path.read_bytes().splitlines())
    return lines

COMPARED = ["id", "policy", "row_number", "status", "violation", "category", "rule_ids", "confidence",
            "rationale", "prompt_tokens", "completion_tokens", "reasoning_tokens", "fingerprint"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    texts = ["great photo, thanks", "buy now and click here for free money", "you people are vermin",
             "see you friday", "limited offer, free gift card"]
    rows = [{"id": f"r{i:03d}", "text": texts[i % 5] + (f" #{i}" if i % 7 else "")} for i in range(80)]
    rows[10]["text"] = "   "  # no request: skipped_empty, as online
    return write_jsonl(tmp_path / "in.jsonl", rows)


def _job(data: Path, out: Path) -> list[str]:
    return ["--input", str(data), "--policy", "spam", "--policy", "hate_harassment", "--out", str(out),
            "--provider", "openai", "--model", SIM_MODEL]


def _prepare(data: Path, out: Path, requests: Path, *extra: str) -> int:
    return main(["batch", "prepare", *_job(data, out), "--output", str(requests), *extra])


def _labels(out: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / "labels").glob("part-*.parquet"))).sort("row_number", "policy")


def _report(out: Path) -> dict:
    return orjson.loads((out / "cost_report.json").read_bytes())


def _online(tmp_path: Path, data: Path) -> Path:
    config = make_config(tmp_path, [data], out=str(tmp_path / "online"))
    result = run_pipeline(config)
    assert result.code == exitcodes.EXIT_OK, result.stderr
    return result.out


def test_round_trip_gives_the_online_labels_and_tokens_at_batch_prices(tmp_path: Path, data: Path, capsys) -> None:
    """rows -> prepare -> `moderate simulate --batch` -> ingest equals an online run against the simulator."""
    out, requests, results = tmp_path / "batch", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    assert _prepare(data, out, requests) == exitcodes.EXIT_OK
    lines = requests.read_bytes().splitlines()
    assert len(lines) == len({orjson.loads(line)["custom_id"] for line in lines})  # one per (text, policy)
    assert all(len(orjson.loads(line)["custom_id"]) <= 64 for line in lines)
    assert answer_batch_file([requests], results) == len(lines)
    assert len(results.read_bytes().splitlines()) == len(lines)
    assert main(["batch", "ingest", str(out), str(results)]) == exitcodes.EXIT_OK
    assert "batch ingested" in capsys.readouterr().err

    online = _online(tmp_path, data)
    batch_labels, online_labels = _labels(out), _labels(online)
    assert batch_labels.select(COMPARED).equals(online_labels.select(COMPARED))
    assert set(batch_labels.filter(pl.col("status") == "ok")["source"]) <= {"batch", "store"}
    batch_report, online_report = _report(out), _report(online)
    for key in ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "rows", "labels", "statuses"):
        assert batch_report[key] == online_report[key], key
    assert batch_report["cost_usd"] == pytest.approx(online_report["cost_usd"] * 0.5, rel=1e-6)
    assert batch_report["batch"] == {"requests": len(lines), "cost_usd": pytest.approx(batch_report["cost_usd"]),
                                     "discount": 0.5}
    assert "billed at batch prices (50% off)" in (out / "cost_report.md").read_text()
    assert (out / "report.html").exists()
    # the folder is finished: an online run of the same job has nothing to do
    again = run_pipeline(make_config(tmp_path, [data], out=str(out)))
    assert again.code == exitcodes.EXIT_OK and "nothing to do" in again.stderr and again.stats.requests == 0


def test_prepared_bodies_are_byte_for_byte_what_run_sends(tmp_path: Path, data: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    assert _prepare(data, tmp_path / "batch", requests) == exitcodes.EXIT_OK
    prepared = {line[line.index(b'"body":') + 7:-1] for line in requests.read_bytes().splitlines()}
    sent: list[bytes] = []

    async def capture(body: bytes):
        from pipeline.call.client import HttpReply

        sent.append(body)
        answer = {"model": SIM_MODEL, "choices": [{"message": {"content": "0"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        return HttpReply(200, {}, orjson.dumps(answer))

    import asyncio
    import io

    from pipeline.call.client import FunctionTransport
    from pipeline.engines.local.app import run_job_async

    config = make_config(tmp_path, [data], out=str(tmp_path / "online"))
    code = asyncio.run(run_job_async(config, stream=io.StringIO(), transport=FunctionTransport(capture),
                                     progress=False))
    assert code == exitcodes.EXIT_OK
    assert set(sent) == prepared and len(sent) == len(prepared)


def test_missing_and_failed_lines_get_typed_statuses_and_run_sends_just_those(tmp_path: Path, data: Path,
                                                                              capsys) -> None:
    out, requests, results = tmp_path / "batch", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    assert _prepare(data, out, requests) == exitcodes.EXIT_OK
    answer_batch_file([requests], results)
    lines = results.read_bytes().splitlines()
    kept, dropped = lines[3:], lines[:2]
    failed = orjson.loads(lines[2])
    failed["response"] = {"status_code": 500, "body": {"error": {"message": "worker crashed"}}}
    errors = tmp_path / "errors.jsonl"
    errors.write_bytes(orjson.dumps(failed) + b"\n")
    results.write_bytes(b"\n".join(kept) + b"\n")
    assert main(["batch", "ingest", str(out), str(results), str(errors)]) == exitcodes.EXIT_ROWS_FAILED
    err = capsys.readouterr().err
    assert "sends just those" in err
    statuses = _labels(out)["status"].value_counts().to_dict(as_series=False)
    counts = dict(zip(statuses["status"], statuses["count"], strict=True))
    assert counts.get("batch_failed") == 1
    assert counts.get("batch_missing", 0) >= len(dropped)  # duplicates of a dropped text are missing too
    missing_error = _labels(out).filter(pl.col("status") == "batch_failed")["error"][0]
    assert "worker crashed" in missing_error

    finish = run_pipeline(make_config(tmp_path, [data], out=str(out)))
    assert finish.code == exitcodes.EXIT_OK, finish.stderr
    assert finish.stats.requests == len(dropped) + 1  # only the unanswered (text, policy) pairs
    online = _online(tmp_path, data)
    assert _labels(out).select(COMPARED).equals(_labels(online).select(COMPARED))


def test_ingesting_the_same_file_twice_changes_nothing(tmp_path: Path, data: Path, capsys) -> None:
    out, requests, results = tmp_path / "batch", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    assert _prepare(data, out, requests) == exitcodes.EXIT_OK
    answer_batch_file([requests], results)
    assert main(["batch", "ingest", str(out), str(results)]) == exitcodes.EXIT_OK
    shards = {p.name: p.read_bytes() for p in (out / "labels").iterdir()}
    report = _report(out)
    assert main(["batch", "ingest", str(out), str(results)]) == exitcodes.EXIT_OK
    assert "1 already ingested" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "labels").iterdir()} == shards
    again = _report(out)
    for key in ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "statuses"):
        assert again[key] == report[key], key


def test_prepare_again_after_ingest_has_nothing_to_send(tmp_path: Path, data: Path, capsys) -> None:
    out, requests, results = tmp_path / "batch", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    assert _prepare(data, out, requests) == exitcodes.EXIT_OK
    answer_batch_file([requests], results)
    assert main(["batch", "ingest", str(out), str(results)]) == exitcodes.EXIT_OK
    capsys.readouterr()
    assert _prepare(data, out, tmp_path / "again.jsonl") == exitcodes.EXIT_OK
    assert "batch prepared: 0 requests" in capsys.readouterr().err


def test_prepare_splits_files_under_the_line_and_byte_limits(tmp_path: Path, data: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    assert _prepare(data, tmp_path / "a", requests, "--max-lines", "30") == exitcodes.EXIT_OK
    parts = sorted(tmp_path.glob("requests-*.jsonl"))
    assert len(parts) > 1 and not requests.exists()
    assert all(len(p.read_bytes().splitlines()) <= 30 for p in parts)
    total = sum(len(p.read_bytes().splitlines()) for p in parts)
    small = tmp_path / "small.jsonl"
    assert _prepare(data, tmp_path / "b", small, "--max-bytes", "8KB") == exitcodes.EXIT_OK
    pieces = sorted(tmp_path.glob("small-*.jsonl"))
    assert all(p.stat().st_size <= 8000 for p in pieces)
    assert sum(len(p.read_bytes().splitlines()) for p in pieces) == total


def test_ingest_into_a_folder_not_prepared_is_a_one_line_usage_error(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results.jsonl"
    results.write_bytes(b"")
    assert main(["batch", "ingest", str(tmp_path / "nowhere"), str(results)]) == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch prepare" in err


def test_round_trip_into_an_s3_output_folder(tmp_path: Path, data: Path, s3) -> None:
    bucket = s3.new_bucket()
    out, requests, results = f"s3://{bucket}/batch", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    assert main(["batch", "prepare", *_job(data, Path("unused")), "--out", out, "--output", str(requests)]) == 0
    answer_batch_file([requests], results)
    assert main(["batch", "ingest", out, str(results)]) == exitcodes.EXIT_OK
    keys = s3.keys(bucket)
    assert "batch/manifest.json" in keys and "batch/cost_report.json" in keys and "batch/.lock" not in keys
    again = run_pipeline(make_config(tmp_path, [data], out=out))
    assert again.code == exitcodes.EXIT_OK and "nothing to do" in again.stderr and again.stats.requests == 0


def test_prepare_refuses_a_job_without_a_store_and_a_folder_in_use(tmp_path: Path, data: Path, capsys) -> None:
    from pipeline.output.outdir import OutputDir

    requests = tmp_path / "requests.jsonl"
    assert _prepare(data, tmp_path / "a", requests, "--store", "none") == exitcodes.EXIT_USAGE
    assert "needs the result store" in capsys.readouterr().err
    holder = OutputDir(tmp_path / "b")
    holder.lock()
    try:
        assert _prepare(data, tmp_path / "b", requests) == exitcodes.EXIT_LOCKED
    finally:
        holder.unlock()
    assert "another run" in capsys.readouterr().err and not requests.exists()


def test_error_lines_of_a_faulty_batch_are_batch_failed_and_the_next_run_finishes_them(
        tmp_path: Path, data: Path, capsys) -> None:
    out, requests, results = tmp_path / "batch", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    errors = tmp_path / "errors.jsonl"
    assert _prepare(data, out, requests) == exitcodes.EXIT_OK
    answer_batch_file([requests], results, "--error-5xx", "0.2", "--junk-output", "0.1", "--seed", "7",
                      errors=errors)
    failed_lines = len(errors.read_bytes().splitlines())
    assert failed_lines > 0
    assert main(["batch", "ingest", str(out), str(results), str(errors)]) == exitcodes.EXIT_ROWS_FAILED
    labels = _labels(out)
    failed = labels.filter(pl.col("status") == "batch_failed")
    assert failed.height > 0 and failed["error"].str.starts_with("batch: ").all()
    assert labels.filter(pl.col("status") == "batch_missing").height == 0  # every line came back
    finish = run_pipeline(make_config(tmp_path, [data], out=str(out)))
    assert finish.code == exitcodes.EXIT_OK, finish.stderr
    assert finish.stats.requests == failed.select("fingerprint").n_unique()
    online = _online(tmp_path, data)
    assert _labels(out).select(COMPARED).equals(_labels(online).select(COMPARED))


LABELLED = ["id", "policy", "row_number", "status", "violation", "category", "error", "fingerprint"]
BILLED = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cost_usd", "statuses")


def _faulty_batch(tmp_path: Path, data: Path) -> tuple[Path, list[Path]]:
    """A prepared folder and results with error lines and billed junk answers (batch_failed)."""
    out, requests, results = tmp_path / "batch", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    errors = tmp_path / "errors.jsonl"
    assert _prepare(data, out, requests) == exitcodes.EXIT_OK
    answer_batch_file([requests], results, "--error-5xx", "0.1", "--junk-output", "0.2", "--seed", "3",
                      errors=errors)
    return out, [results, errors]


def test_an_ingest_stopped_before_its_manifest_was_written_bills_nothing_twice(tmp_path: Path, data: Path) -> None:
    out, files = _faulty_batch(tmp_path, data)
    prepared = (out / "manifest.json").read_bytes()
    assert main(["batch", "ingest", str(out), *map(str, files)]) == exitcodes.EXIT_ROWS_FAILED
    labels, report = _labels(out), _report(out)
    assert labels.filter(pl.col("status") == "batch_failed").height > 0
    # killed after the store committed, before the folder recorded the files: the manifest is as prepared
    (out / "manifest.json").write_bytes(prepared)
    assert main(["batch", "ingest", str(out), *map(str, files)]) == exitcodes.EXIT_ROWS_FAILED
    assert _labels(out).select(LABELLED).equals(labels.select(LABELLED))
    again = _report(out)
    for key in BILLED:
        assert again[key] == report[key], key


def test_ingesting_the_same_files_again_keeps_batch_failed_with_its_error(tmp_path: Path, data: Path) -> None:
    out, files = _faulty_batch(tmp_path, data)
    assert main(["batch", "ingest", str(out), *map(str, files)]) == exitcodes.EXIT_ROWS_FAILED
    labels, report = _labels(out), _report(out)
    assert main(["batch", "ingest", str(out), *map(str, files)]) == exitcodes.EXIT_ROWS_FAILED
    again = _labels(out)
    assert again.filter(pl.col("status") == "batch_missing").height == 0
    assert again.select(LABELLED).equals(labels.select(LABELLED))
    for key in BILLED:
        assert _report(out)[key] == report[key], key


def test_ingest_into_a_folder_that_does_not_exist_does_not_create_it(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results.jsonl"
    results.write_bytes(b"")
    assert main(["batch", "ingest", str(tmp_path / "nowhere"), str(results)]) == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err and "batch prepare" in err
    assert not (tmp_path / "nowhere").exists()
def test_a_result_line_echoing_the_key_in_any_encoding_is_redacted() -> None:
    forms = " ".join(key_spellings(LEAKED_KEY).values())
    escaped = "".join(f"\\u{ord(c):04x}" for c in LEAKED_KEY)
    verdict = '{"violation": 1, "rationale": "sent ' + escaped + '"}'  # the parser decodes the escapes
    answers = [{"model": f"m {LEAKED_KEY}", "choices": [{"finish_reason": "stop", "message": {"content": content}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}} for content in (f"no verdict {forms}", verdict)]
    lines = [ResultLine("a", 200, answers[0], None), ResultLine("b", 200, answers[1], None),
             ResultLine("c", 400, {"error": {"message": forms}}, None), ResultLine("d", None, None, forms)]
    outcomes = [read_answer(line, Pricing(0.1, 0.05, 0.4), system_tokens=5, keep_reasoning=True,
                            redactor=Redactor(LEAKED_KEY)) for line in lines]
    assert [o.status for o in outcomes] == [Status.BATCH_FAILED, Status.OK, Status.REJECTED, Status.BATCH_FAILED]
    assert outcomes[1].verdict is not None and outcomes[1].verdict.rationale == "sent [redacted]"
    assert all("[redacted]" in repr(o) for o in outcomes) and leaks(repr(outcomes)) == []


def test_a_batch_of_a_policy_sent_as_written_is_read_with_its_patterns(tmp_path: Path, data: Path) -> None:
    policy = Path(__file__).resolve().parents[2] / "data" / "spam_severity" / "policy.txt"
    out, requests, results = tmp_path / "batch", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    job = ["--input", str(data), "--policy", str(policy), "--output-format", "policy", "--label-pattern",
           r"D-(SP\d)", "--violation-pattern", "SP[2-4]", "--out", str(out), "--provider", "openai",
           "--model", SIM_MODEL]
    assert main(["batch", "prepare", *job, "--output", str(requests)]) == exitcodes.EXIT_OK
    first = orjson.loads(requests.read_bytes().splitlines()[0])
    assert first["body"]["messages"][0]["content"] == policy.read_text(encoding="utf-8")
    answer_batch_file([requests], results, "--answer-template", "Spam Policy (#SP)", "D-{rule}, R-SP0", "D-SP0, R-SP0")
    assert main(["batch", "ingest", str(out), str(results)]) == exitcodes.EXIT_OK
    ok = _labels(out).filter(pl.col("status") == "ok")
    assert ok.height == 79 and set(ok["category"]) == {"SP0", "SP2"}
    assert ok["violation"].to_list() == [int(c == "SP2") for c in ok["category"]]
    assert all(raw.startswith(f"D-{c}") for raw, c in zip(ok["raw_output"], ok["category"], strict=True))
