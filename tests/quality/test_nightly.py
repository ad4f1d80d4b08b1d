"""End to end over loopback against the simulator: kept columns, sampling, JSON logs, canaries, drift, GPU cost."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import make_config, run_pipeline, write_jsonl

from pipeline.audit.trainingset import export
from pipeline.core import exitcodes
from pipeline.core.records import OutputFormat
from pipeline.plan.policies import load_policy
from pipeline.plan.prompt import render_system
from pipeline.quality.sampling import chosen
from pipeline.simulator import SimulatorConfig
from pipeline.simulator.rules import decide, keywords_for

FAST = SimulatorConfig(latency_ms=1, jitter_ms=1)
SPAM = "buy now and click here for free money"
BENIGN = "see you at the meetup on friday"


def expected_violation(policy: str, text: str) -> int:
    return decide(keywords_for(render_system(load_policy(policy), OutputFormat.RATIONALE)), text).violation


# -- kept columns --------------------------------------------------------------------------------
def test_kept_parquet_columns_keep_their_type_in_shards_and_export(tmp_path: Path) -> None:
    folder = tmp_path / "region=eu"
    folder.mkdir()
    table = pa.table({"id": [f"r{i}" for i in range(30)], "text": [SPAM if i % 3 else BENIGN for i in range(30)],
                      "gold": pa.array([int(i % 3 != 0) for i in range(30)], pa.int8()),
                      "score": pa.array([i / 10 for i in range(30)], pa.float32())})
    pq.write_table(table, folder / "part-0.parquet")
    config = make_config(tmp_path, [folder / "part-0.parquet"], policies=["spam"], shard_rows=10,
                         keep_columns=["gold", "score", "region"])
    result = run_pipeline(config, FAST)
    assert result.code == exitcodes.EXIT_OK, result.stderr
    schema = pq.read_schema(result.out / "labels" / "part-00000.parquet")
    assert schema.names[-3:] == ["gold", "score", "region"]
    assert (schema.field("gold").type, schema.field("score").type, schema.field("region").type) == (
        pa.int8(), pa.float32(), pa.string())
    labels = result.labels().sort("row_number")
    assert labels["gold"].to_list() == [int(i % 3 != 0) for i in range(30)]
    assert set(labels["region"]) == {"eu"}
    out = tmp_path / "train.parquet"
    export(result.out, fmt="parquet", output=out, inputs=[str(folder / "part-0.parquet")])
    exported = pq.read_table(out)
    assert exported.schema.field("gold").type == pa.int8()
    assert "status" not in exported.schema.names  # only the kept columns follow the flat ones
    assert sorted(exported.column("gold").to_pylist()) == sorted(labels["gold"].to_list())


def test_a_kept_dictionary_column_whose_files_together_overflow_its_index_type_is_written(tmp_path: Path) -> None:
    # each file's dictionary fits 8-bit indices; one shard holding both does not: the shard
    # write failed with a traceback after every answer was paid for
    folder = tmp_path / "in"
    folder.mkdir()
    for f in range(2):
        values = pa.array([f"f{f}-{i}" for i in range(100)])
        cat = pa.DictionaryArray.from_arrays(pa.array(range(100), pa.int8()), values)
        pq.write_table(pa.table({"id": [f"{f}-{i}" for i in range(100)], "text": [BENIGN] * 100, "cat": cat}),
                       folder / f"part-{f}.parquet")
    result = run_pipeline(make_config(tmp_path, [folder], policies=["spam"], keep_columns=["cat"]), FAST)
    assert result.code == exitcodes.EXIT_OK, result.stderr
    labels = result.labels().sort("input_file", "row_number")
    assert labels["cat"].cast(pl.String).to_list() == [f"f{f}-{i}" for f in range(2) for i in range(100)]


def test_kept_jsonl_columns_are_text_and_missing_keys_are_null(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": BENIGN, "lang": "de", "n": i} for i in range(5)] + [{"id": "r5", "text": SPAM}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run_pipeline(make_config(tmp_path, [source], policies=["spam"], keep_columns=["lang", "n"]), FAST)
    assert result.code == exitcodes.EXIT_OK, result.stderr
    labels = result.labels().sort("row_number")
    assert labels.schema["n"] == pl.String
    assert labels["n"].to_list() == ["0", "1", "2", "3", "4", None]
    assert labels["lang"].to_list() == ["de"] * 5 + [None]


@pytest.mark.parametrize(("keep", "words"), [(["status"], "label column"), (["nope"], "no column 'nope' to keep")])
def test_a_kept_column_that_clashes_or_is_missing_is_a_one_line_error(tmp_path: Path, comments: Path,
                                                                      keep: list[str], words: str) -> None:
    result = run_pipeline(make_config(tmp_path, [comments], keep_columns=keep), FAST)
    assert result.code == exitcodes.EXIT_USAGE
    assert words in result.stderr and "Traceback" not in result.stderr
    assert result.stats.requests == 0


# -- sampling ------------------------------------------------------------------------------------
def _sampled_rows(tmp_path: Path, source: Path, name: str, seed: int) -> tuple[set[int], dict]:
    config = make_config(tmp_path, [source], policies=["spam"], sample=0.25, seed=seed, out=str(tmp_path / name),
                         shard_rows=50, store="none")
    result = run_pipeline(config, FAST)
    assert result.code == exitcodes.EXIT_OK, result.stderr
    return set(result.labels()["row_number"]), result.report()


def test_sample_is_reproducible_with_its_seed_and_scales_to_the_whole_input(tmp_path: Path) -> None:
    texts = [SPAM if i % 4 == 0 else BENIGN for i in range(400)]
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)])
    first, report = _sampled_rows(tmp_path, source, "a", seed=7)
    again, _ = _sampled_rows(tmp_path, source, "b", seed=7)
    other, _ = _sampled_rows(tmp_path, source, "c", seed=8)
    assert first == again == {n for n in range(400) if chosen(n, seed=7, rate=0.25)}
    assert first != other
    assert 60 < len(first) < 140
    sample = report["sample"]
    assert (sample["input_rows"], sample["sampled_rows"], report["rows"]) == (400, len(first), len(first))
    truth = sum(expected_violation("spam", t) for t in texts)
    spam = sample["per_policy"]["spam"]["violations_in_input"]
    assert spam["low"] <= truth <= spam["high"]
    whole = sample["cost_usd_in_input"]
    assert whole["low"] <= whole["estimate"] <= whole["high"]
    # two texts, both in the sample: the whole input pays for exactly the calls the sample made
    assert whole["low"] <= report["cost_usd"] <= whole["high"] and sample["duplicates_counted"]
    assert whole["estimate"] == pytest.approx(report["cost_usd"], rel=0.2)
    manifest = orjson.loads((tmp_path / "a" / "manifest.json").read_bytes())
    assert manifest["finished"] and manifest["total_rows"] == 400
    assert sum(s["input_rows"] for s in manifest["shards"].values()) == 400
    rerun = run_pipeline(make_config(tmp_path, [source], policies=["spam"], sample=0.25, seed=7,
                                     out=str(tmp_path / "a"), shard_rows=50, store="none"), FAST)
    assert rerun.code == exitcodes.EXIT_OK and "nothing to do" in rerun.stderr
    assert rerun.report()["sample"]["sampled_rows"] == len(first)
    other_sample = run_pipeline(make_config(tmp_path, [source], policies=["spam"], sample=0.25, seed=8,
                                            out=str(tmp_path / "a"), store="none"), FAST)
    assert other_sample.code == exitcodes.EXIT_USAGE  # another sample is another job: --force or another --out


def test_the_sampled_cost_projection_counts_the_inputs_duplicate_texts(tmp_path: Path) -> None:
    # 400 texts once and 10 texts 20 times each, shuffled: a sample sees few of the repeats. Over 400 seeds the
    # 95 % interval holds the real bill 94 % of the time; scaling what the sample paid, 52 %.
    texts = [f"message {k} " + "word " * (k % 13) for k in range(400)]
    texts += [f"repeated {k} " + "word " * k for k in range(10) for _ in range(20)]
    random.Random(1).shuffle(texts)
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)])
    whole = run_pipeline(make_config(tmp_path, [source], policies=["spam"], out=str(tmp_path / "all"),
                                     store="none"), FAST)
    sampled = run_pipeline(make_config(tmp_path, [source], policies=["spam"], sample=0.2, seed=3, store="none",
                                       out=str(tmp_path / "some")), FAST)
    assert whole.code == sampled.code == exitcodes.EXIT_OK, sampled.stderr
    real, report = whole.report()["cost_usd"], sampled.report()
    projected = report["sample"]["cost_usd_in_input"]
    assert projected["low"] <= real <= projected["high"]
    assert projected["high"] - projected["low"] < real  # an interval that says something
    # scaling what the sample paid, as if its share of repeats were the input's, is above the bill
    assert report["cost_usd"] * len(texts) / report["rows"] > real


def test_a_row_count_sample_of_an_input_of_unknown_size_is_refused(tmp_path: Path, comments: Path) -> None:
    import gzip

    packed = tmp_path / "in.jsonl.gz"
    packed.write_bytes(gzip.compress(comments.read_bytes()))
    result = run_pipeline(make_config(tmp_path, [packed], sample=10), FAST)
    assert result.code == exitcodes.EXIT_USAGE
    assert "--sample" in result.stderr and "fraction" in result.stderr


# -- JSON log ------------------------------------------------------------------------------------
def test_json_log_lines_all_parse_and_hold_no_secret(tmp_path: Path, comments: Path) -> None:
    secret = "sk-very-secret-key-0042"
    config = make_config(tmp_path, [comments], log_format="json", log_interval=0.001)
    result = run_pipeline(config, SimulatorConfig(latency_ms=20, jitter_ms=5, api_key=secret), env_key=secret)
    assert result.code == exitcodes.EXIT_OK, result.stderr
    assert secret not in result.stderr
    events = [orjson.loads(line) for line in result.stderr.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    assert "progress" in kinds
    finish = events[-1]
    assert finish["exit_code"] == 0 and finish["labels"] == 120 and finish["statuses"] == {"ok": 120}
    assert all("time" in e for e in events)


def test_json_log_reports_a_usage_error_as_one_event(tmp_path: Path) -> None:
    result = run_pipeline(make_config(tmp_path, [tmp_path / "missing.jsonl"], log_format="json"), FAST)
    assert result.code == exitcodes.EXIT_USAGE
    (event,) = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert event["event"] == "error" and event["exit_code"] == 2 and "missing.jsonl" in event["message"]


@pytest.mark.slow
def test_json_log_has_a_pause_event_when_the_host_orders_a_wait(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"{BENIGN} {i}"} for i in range(2)])
    config = make_config(tmp_path, [source], policies=["spam"], log_format="json", concurrency=4)
    result = run_pipeline(config, SimulatorConfig(rpm=20, advertise_limits=True))  # quota spent: a 3 s pause
    events = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert result.code == exitcodes.EXIT_OK, result.stderr
    pauses = [e for e in events if e["event"] == "pause"]
    assert pauses and pauses[0]["seconds"] > 0 and pauses[0]["reason"]


# -- canaries ------------------------------------------------------------------------------------
def _canaries(tmp_path: Path, rows: list[dict]) -> Path:
    return write_jsonl(tmp_path / "canaries.jsonl", rows)


def test_canaries_that_pass_are_reported_billed_and_never_stored(tmp_path: Path, comments: Path) -> None:
    canaries = _canaries(tmp_path, [
        {"text": SPAM, "policy": "spam", "violation": 1}, {"text": BENIGN, "policy": "spam", "violation": 0},
        {"text": "you people are vermin", "policy": "hate_harassment", "violation": 1},
        {"text": "hello", "policy": "self_harm", "violation": 0},  # not a policy of this run: ignored
    ])
    config = make_config(tmp_path, [comments], canaries=str(canaries))
    result = run_pipeline(config, FAST)
    assert result.code == exitcodes.EXIT_OK, result.stderr
    assert "canaries 3/3 passed" in result.stderr and "1 canaries are for policies" in result.stderr
    labels = result.labels()
    assert labels.height == 120 and not labels["id"].str.starts_with("canary").any()
    report = result.report()
    assert report["canaries"]["passed"] == 3 and report["canaries"]["cost_usd"] > 0
    assert report["requests"] == result.stats.requests  # the canaries' calls are in the bill
    with sqlite3.connect(result.out / "store.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert stored == result.stats.requests - 3
    # a second run (forced) asks the model again: a cached canary answer proves nothing
    again = run_pipeline(make_config(tmp_path, [comments], canaries=str(canaries), force=True), FAST)
    assert again.code == exitcodes.EXIT_OK and again.stats.requests == 3


def test_a_wrong_canary_exits_6_and_names_it_in_the_report(tmp_path: Path, comments: Path) -> None:
    canaries = _canaries(tmp_path, [{"text": SPAM, "policy": "spam", "violation": 0},
                                    {"text": BENIGN, "policy": "spam", "violation": 0}])
    result = run_pipeline(make_config(tmp_path, [comments], canaries=str(canaries)), FAST)
    assert result.code == exitcodes.EXIT_CANARY == 6
    assert "CANARIES WRONG: 1 of 2" in result.stderr
    report = result.report()
    assert report["canaries"]["failures"][0]["text"] == SPAM
    rows = pq.read_table(result.out / "canaries.parquet").to_pylist()
    assert [(r["expected"], r["violation"]) for r in rows] == [(0, 1), (0, 0)]
    html = (result.out / "report.html").read_text()
    assert "1 of 2 canaries got the wrong verdict" in html


def test_a_bad_canary_file_is_a_one_line_error(tmp_path: Path, comments: Path) -> None:
    canaries = _canaries(tmp_path, [{"text": SPAM, "policy": "spam", "violation": "maybe"}])
    result = run_pipeline(make_config(tmp_path, [comments], canaries=str(canaries)), FAST)
    assert result.code == exitcodes.EXIT_USAGE
    assert "violation must be 0 or 1" in result.stderr and result.stats.requests == 0


# -- drift ---------------------------------------------------------------------------------------
def test_a_shifted_violation_rate_is_flagged_in_summary_report_and_json_log(tmp_path: Path) -> None:
    store = str(tmp_path / "shared.sqlite")
    calm = write_jsonl(tmp_path / "calm.jsonl", [{"id": f"c{i}", "text": f"{BENIGN} {i}"} for i in range(60)])
    loud = write_jsonl(tmp_path / "loud.jsonl", [{"id": f"l{i}", "text": f"{SPAM if i % 2 else BENIGN} {i}"}
                                                 for i in range(60)])
    first = run_pipeline(make_config(tmp_path, [calm], policies=["spam"], store=store, out=str(tmp_path / "n1")),
                         FAST)
    assert first.code == exitcodes.EXIT_OK and "DRIFT" not in first.stderr
    same = run_pipeline(make_config(tmp_path, [calm], policies=["spam"], store=store, out=str(tmp_path / "n2")),
                        FAST)
    assert "DRIFT" not in same.stderr and same.report()["drift"]["policies"][0]["flagged"] is False
    second = run_pipeline(make_config(tmp_path, [loud], policies=["spam"], store=store, out=str(tmp_path / "n3"),
                                      log_format="json"), FAST)
    assert second.code == exitcodes.EXIT_DRIFT
    finish = orjson.loads(second.stderr.splitlines()[-1])
    assert "DRIFT: spam 0.0% -> 50.0%" in finish["message"]
    (policy,) = finish["drift"]["policies"]
    assert policy["flagged"] and policy["runs"] == 2 and policy["baseline_labels"] == 120
    assert second.report()["drift"]["flagged"].startswith("drift: spam")
    assert "flagged" in (second.out / "report.html").read_text()


# -- self-hosted cost ----------------------------------------------------------------------------
def test_gpu_hour_price_gives_a_cost_per_1000_labels_from_wall_time(tmp_path: Path, comments: Path) -> None:
    result = run_pipeline(make_config(tmp_path, [comments], gpu_hour_usd=3.6), FAST)
    assert result.code == exitcodes.EXIT_OK
    report = result.report()
    hosted = report["self_hosted"]
    wall = sum(run["elapsed_s"] for run in report["runs"])
    assert hosted["wall_seconds"] == pytest.approx(wall)
    assert hosted["per_1000_labels"] == pytest.approx(3.6 * wall / 3600 / 120 * 1000, rel=1e-3)
    assert report["cost_per_1000_labels"] == pytest.approx(report["cost_usd"] / 120 * 1000)
    assert "GPU $" in result.stderr and "Self-hosted cost" in (result.out / "report.html").read_text()


def test_a_bad_flag_value_under_json_logs_is_a_json_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pipeline.cli.main import main

    code = main(["run", "--input", str(tmp_path), "--sample", "2.5", "--log-format", "json"])
    assert code == exitcodes.EXIT_USAGE
    event = orjson.loads(capsys.readouterr().err)
    assert event["event"] == "error" and event["message"].startswith("moderate: error: --sample 2.5: ")


def test_json_log_of_an_in_process_simulator_run_is_json_only(tmp_path: Path, comments: Path) -> None:
    import io

    from pipeline.engines.local.app import run_job

    stream = io.StringIO()
    config = make_config(tmp_path, [comments], provider="simulator", log_format="json")
    assert run_job(config, stream=stream, progress=True) == exitcodes.EXIT_OK  # no bar even when asked
    events = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert events[0]["event"] == "notice" and "SIMULATOR" in events[0]["message"]
    assert [e["event"] for e in events[1:]] == ["start", "finish"]
