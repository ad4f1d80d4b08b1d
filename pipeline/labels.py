"""The label shard's columns: one row per (input row, policy), with full provenance."""

from __future__ import annotations

import pyarrow as pa

from pipeline.records import Outcome

#: column order and types of every shard (docs/output.md describes each column).
LABEL_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("policy", pa.string()),
    ("violation", pa.int8()),
    ("status", pa.string()),
    ("category", pa.string()),
    ("rule_ids", pa.list_(pa.string())),
    ("confidence", pa.string()),
    ("rationale", pa.string()),
    ("error", pa.string()),
    ("raw_output", pa.string()),
    ("reasoning", pa.string()),
    ("model", pa.string()),
    ("served_model", pa.string()),
    ("policy_version", pa.string()),
    ("reasoning_effort", pa.string()),
    ("output_format", pa.string()),
    ("prompt_tokens", pa.int32()),
    ("cached_prompt_tokens", pa.int32()),
    ("completion_tokens", pa.int32()),
    ("reasoning_tokens", pa.int32()),
    ("usage_estimated", pa.bool_()),
    ("cost_usd", pa.float64()),
    ("latency_ms", pa.float32()),
    ("attempts", pa.int16()),
    ("finish_reason", pa.string()),
    # where the verdict came from: "api" (paid in this run), "store" (an earlier run),
    # "duplicate" (same text earlier in this run), "none" (no call: skipped, unsent, input error)
    ("source", pa.string()),
    ("fingerprint", pa.string()),
    ("row_number", pa.int64()),
    ("input_file", pa.string()),
    ("run_id", pa.string()),
])

COLUMNS = tuple(LABEL_SCHEMA.names)


def label_row(
    *,
    row_id: str,
    policy: str,
    outcome: Outcome,
    model: str,
    policy_version: str,
    reasoning_effort: str,
    output_format: str,
    source: str,
    fingerprint: bytes | None,
    row_number: int,
    input_file: str,
    run_id: str,
) -> tuple:
    """One shard row as a tuple in `COLUMNS` order."""
    v = outcome.verdict
    u = outcome.usage
    return (
        row_id, policy,
        v.violation if v else None, outcome.status.value,
        v.category if v else None, list(v.rule_ids) if v else None,
        v.confidence if v else None, v.rationale if v else None,
        outcome.error, outcome.raw_output, outcome.reasoning,
        model, outcome.served_model, policy_version, reasoning_effort, output_format,
        u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens, u.reasoning_tokens,
        u.estimated, outcome.cost_usd, outcome.latency_ms, outcome.attempts, outcome.finish_reason,
        source, fingerprint.hex() if fingerprint else None, row_number, input_file, run_id,
    )


def to_table(rows: list[tuple]) -> pa.Table:
    """Rows (tuples in `COLUMNS` order) to an Arrow table with the label schema."""
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in COLUMNS]
    arrays = [pa.array(col, type=field.type) for col, field in zip(columns, LABEL_SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=LABEL_SCHEMA)
