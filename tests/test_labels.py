from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.labels import COLUMNS, LABEL_SCHEMA, label_row, to_table
from pipeline.records import Outcome, Status, Usage, Verdict


def row(outcome: Outcome, *, row_id: str = "r1", fingerprint: bytes | None = b"\xab\xcd", source: str = "api") -> tuple:
    return label_row(row_id=row_id, policy="spam", outcome=outcome, model="gpt-oss-safeguard-20b",
                     policy_version="abc123", reasoning_effort="low", output_format="rationale", source=source,
                     fingerprint=fingerprint, row_number=7, input_file="data/in.jsonl", run_id="run-1")


OK = Outcome(Status.OK, verdict=Verdict(1, category="SP1", rule_ids=("SP1", "SP3"), confidence="high",
                                        rationale="sells watches"),
             usage=Usage(prompt_tokens=120, cached_prompt_tokens=20, completion_tokens=30, reasoning_tokens=25),
             cost_usd=1.5e-5, latency_ms=42.5, attempts=2, billed_calls=1, finish_reason="stop",
             served_model="served-20b")


def test_label_row_has_one_value_per_column() -> None:
    assert len(row(OK)) == len(COLUMNS) == len(LABEL_SCHEMA)
    assert COLUMNS[:4] == ("id", "policy", "violation", "status")


def test_to_table_has_the_label_schema_and_the_values() -> None:
    table = to_table([row(OK), row(OK, row_id="r2")])
    assert table.schema == LABEL_SCHEMA
    assert table.num_rows == 2
    first = table.to_pylist()[0]
    assert first["id"] == "r1" and first["policy"] == "spam"
    assert first["violation"] == 1 and first["status"] == "ok"
    assert (first["category"], first["confidence"], first["rationale"]) == ("SP1", "high", "sells watches")
    assert (first["prompt_tokens"], first["cached_prompt_tokens"]) == (120, 20)
    assert (first["completion_tokens"], first["reasoning_tokens"]) == (30, 25)
    assert first["usage_estimated"] is False
    assert first["cost_usd"] == 1.5e-5 and first["latency_ms"] == 42.5 and first["attempts"] == 2
    assert first["served_model"] == "served-20b" and first["model"] == "gpt-oss-safeguard-20b"
    assert first["policy_version"] == "abc123" and first["output_format"] == "rationale"
    assert first["fingerprint"] == "abcd" and first["source"] == "api"
    assert (first["row_number"], first["input_file"], first["run_id"]) == (7, "data/in.jsonl", "run-1")


def test_row_without_a_verdict_has_null_verdict_fields() -> None:
    failed = Outcome(Status.FAILED, error="HTTP 503: overloaded (after 6 attempts)", attempts=6)
    table = to_table([row(failed, fingerprint=None, source="none")])
    assert table.schema == LABEL_SCHEMA
    values = table.to_pylist()[0]
    for name in ("violation", "category", "rule_ids", "confidence", "rationale", "fingerprint", "raw_output",
                 "reasoning", "served_model", "finish_reason"):
        assert values[name] is None, name
    assert values["status"] == "failed"
    assert values["error"] == "HTTP 503: overloaded (after 6 attempts)"
    assert values["prompt_tokens"] == 0 and values["cost_usd"] == 0.0
    for field in ("violation", "category", "rule_ids", "confidence", "rationale"):
        assert LABEL_SCHEMA.field(field).nullable


def test_rule_ids_round_trip_through_parquet(tmp_path: Path) -> None:
    no_rules = Outcome(Status.OK, verdict=Verdict(0))
    table = to_table([row(OK), row(no_rules), row(Outcome(Status.REJECTED))])
    pq.write_table(table, tmp_path / "x.parquet")
    back = pq.read_table(tmp_path / "x.parquet")
    assert back.schema == LABEL_SCHEMA
    assert back.column("rule_ids").to_pylist() == [["SP1", "SP3"], [], None]
    assert back.column("violation").to_pylist() == [1, 0, None]


def test_no_rows_give_an_empty_table_with_the_schema() -> None:
    table = to_table([])
    assert table.num_rows == 0
    assert table.schema == LABEL_SCHEMA
    assert table.column("rule_ids").type == pa.list_(pa.string())


def test_column_types() -> None:
    assert LABEL_SCHEMA.field("violation").type == pa.int8()
    assert LABEL_SCHEMA.field("attempts").type == pa.int16()
    assert LABEL_SCHEMA.field("latency_ms").type == pa.float32()
    assert LABEL_SCHEMA.field("row_number").type == pa.int64()
