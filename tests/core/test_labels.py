"""The label field table: shard rows, store rows and the conversions between them and an Outcome."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.labels import COLUMNS, LABEL_SCHEMA, STORED, label_row, outcome_from_values, store_values, to_table
from pipeline.core.records import Outcome, Status, Usage, Verdict


def row(outcome: Outcome, *, row_id: str = "r1", fingerprint: bytes | None = b"\xab\xcd", source: str = "api") -> tuple:
    return label_row(id=row_id, policy="spam", outcome=outcome, model="gpt-oss-safeguard-20b",
                     policy_version="abc123", reasoning_effort="low", output_format="rationale", source=source,
                     fingerprint=fingerprint, row_number=7, input_file="data/in.jsonl", run_id="run-1")


OK = Outcome(Status.OK, verdict=Verdict(1, category="SP1", rule_ids=("SP1", "SP3"), confidence="high",
                                        rationale="sells watches"),
             usage=Usage(prompt_tokens=120, cached_prompt_tokens=20, completion_tokens=30, reasoning_tokens=25),
             cost_usd=1.5e-5, latency_ms=42.5, attempts=2, billed_calls=1, finish_reason="stop",
             served_model="served-20b")


def test_label_row_has_one_value_per_column() -> None:
    assert len(row(OK)) == len(COLUMNS) == len(LABEL_SCHEMA)
    assert tuple(c.name for c in COLUMNS[:4]) == ("id", "policy", "violation", "status")


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


# ---- one field table -----------------------------------------------------------------------------


def test_column_names_are_unique() -> None:
    names = [c.name for c in COLUMNS]
    assert len(set(names)) == len(names)


def test_label_schema_is_derived_from_the_columns() -> None:
    assert LABEL_SCHEMA.names == [c.name for c in COLUMNS]
    assert [f.type for f in LABEL_SCHEMA] == [c.type for c in COLUMNS]


def test_stored_columns_are_the_answer_columns_in_shard_order() -> None:
    assert tuple(c for c in COLUMNS if c.source is not None) == STORED
    assert all(c.sql for c in STORED)
    assert {"id", "policy", "model", "source", "fingerprint", "row_number", "input_file", "run_id"}.isdisjoint(
        c.name for c in STORED)
    assert {"status", "violation", "provider", "server_cost_usd", "error"} <= {c.name for c in STORED}


_text = st.none() | st.text(max_size=20)
_count = st.integers(min_value=0, max_value=2**31 - 1)
_int16 = st.integers(min_value=0, max_value=2**15 - 1)
_money = st.floats(min_value=0.0, max_value=1e3, allow_nan=False)
_verdicts = st.none() | st.builds(
    Verdict, violation=st.integers(min_value=0, max_value=1), category=_text,
    rule_ids=st.lists(st.text(max_size=8), max_size=4).map(tuple), confidence=_text, rationale=_text)
_usages = st.builds(Usage, prompt_tokens=_count, cached_prompt_tokens=_count, completion_tokens=_count,
                    reasoning_tokens=_count, estimated=st.booleans(), server_cost_usd=st.none() | _money)
outcomes = st.builds(
    Outcome, status=st.sampled_from(list(Status)), verdict=_verdicts, usage=_usages, cost_usd=_money,
    latency_ms=st.floats(min_value=0.0, max_value=1e6, width=32), attempts=_int16, billed_calls=_int16,
    finish_reason=_text, error=_text, raw_output=_text, reasoning=_text, served_model=_text, provider=_text)


def by_name(row: tuple) -> dict:
    return {c.name: value for c, value in zip(COLUMNS, row, strict=True)}


@given(outcomes)
def test_outcome_to_label_row_and_back_by_name_is_identity(outcome: Outcome) -> None:
    assert outcome_from_values(by_name(row(outcome))) == outcome


@given(outcomes)
def test_outcome_to_store_values_and_back_is_identity(outcome: Outcome) -> None:
    values = store_values(outcome)
    assert len(values) == len(STORED)
    assert all(v is None or isinstance(v, int | float | str) for v in values)  # what SQLite takes
    assert outcome_from_values(values) == outcome


@given(outcomes)
def test_shard_row_survives_parquet_types(outcome: Outcome) -> None:
    back = to_table([row(outcome)]).to_pylist()[0]
    restored = outcome_from_values(back)
    assert math.isclose(restored.latency_ms, outcome.latency_ms, rel_tol=1e-6)  # stored as float32
    restored.latency_ms = outcome.latency_ms
    assert restored == outcome


def test_kept_values_follow_the_label_columns_with_their_types(tmp_path: Path) -> None:
    from pipeline.core.labels import COLUMN_NAMES, shard_schema

    kept = [pa.field("gold", pa.int8()), pa.field("lang", pa.string())]
    values = label_row(id="r1", policy="spam", outcome=OK, model="m", policy_version="v", reasoning_effort="low",
                       output_format="rationale", source="api", fingerprint=None, row_number=0, input_file="f",
                       run_id="r", kept=(1, "de"))
    table = to_table([values], kept)
    assert table.schema == shard_schema(kept) and table.schema.names[-2:] == ["gold", "lang"]
    assert table.column("gold").to_pylist() == [1] and table.column("violation").to_pylist() == [1]
    assert shard_schema() == LABEL_SCHEMA and "gold" not in COLUMN_NAMES
    pq.write_table(table, tmp_path / "s.parquet")
    assert pq.read_schema(tmp_path / "s.parquet").field("gold").type == pa.int8()
