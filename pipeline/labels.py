"""The label record: one field table for the shard columns, the store's table and both conversions.

A label is one row per (input row, policy). Its columns come from two places: where the row is
(id, policy, provenance of the run) and what the model answered (an `Outcome`). `COLUMNS` lists them
once, in shard order; the Arrow schema, the result store's SQL table and the conversions
Outcome -> shard row, Outcome -> store row and store row -> Outcome are all derived from it, by
name, never by position. Input columns kept with ``--keep-columns`` follow the fixed columns in the
shards, typed from the input; they belong to the row, not the answer, so the store never holds them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from pipeline.records import Outcome, Status, Usage, Verdict

__all__ = ["COLUMNS", "COLUMN_NAMES", "LABEL_SCHEMA", "STORED", "Column", "label_row", "outcome_from_values",
           "shard_schema", "store_values", "to_table"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: pa.DataType
    #: for answer columns: how to read it from an Outcome, and its SQL type in the result store
    get: Callable[[Outcome], Any] | None = None
    sql: str | None = None


def _verdict(attr: str) -> Callable[[Outcome], Any]:
    return lambda o: getattr(o.verdict, attr) if o.verdict is not None else None


def _usage(attr: str) -> Callable[[Outcome], Any]:
    return lambda o: getattr(o.usage, attr)


#: every shard column, in order (docs/output.md describes each). Columns with ``get`` describe the
#: answer and are also stored.
COLUMNS: tuple[Column, ...] = (
    Column("id", pa.string()),
    Column("policy", pa.string()),
    Column("violation", pa.int8(), _verdict("violation"), "INTEGER"),
    Column("status", pa.string(), lambda o: o.status.value, "TEXT NOT NULL"),
    Column("category", pa.string(), _verdict("category"), "TEXT"),
    Column("rule_ids", pa.list_(pa.string()),
           lambda o: list(o.verdict.rule_ids) if o.verdict is not None else None, "TEXT"),
    Column("confidence", pa.string(), _verdict("confidence"), "TEXT"),
    Column("rationale", pa.string(), _verdict("rationale"), "TEXT"),
    Column("error", pa.string(), lambda o: o.error, "TEXT"),
    Column("raw_output", pa.string(), lambda o: o.raw_output, "TEXT"),
    Column("reasoning", pa.string(), lambda o: o.reasoning, "TEXT"),
    Column("model", pa.string()),
    Column("served_model", pa.string(), lambda o: o.served_model, "TEXT"),
    Column("provider", pa.string(), lambda o: o.provider, "TEXT"),
    Column("policy_version", pa.string()),
    Column("reasoning_effort", pa.string()),
    Column("output_format", pa.string()),
    Column("prompt_tokens", pa.int32(), _usage("prompt_tokens"), "INTEGER"),
    Column("cached_prompt_tokens", pa.int32(), _usage("cached_prompt_tokens"), "INTEGER"),
    Column("completion_tokens", pa.int32(), _usage("completion_tokens"), "INTEGER"),
    Column("reasoning_tokens", pa.int32(), _usage("reasoning_tokens"), "INTEGER"),
    Column("usage_estimated", pa.bool_(), _usage("estimated"), "INTEGER"),
    Column("cost_usd", pa.float64(), lambda o: o.cost_usd, "REAL"),
    Column("server_cost_usd", pa.float64(), _usage("server_cost_usd"), "REAL"),
    Column("latency_ms", pa.float32(), lambda o: o.latency_ms, "REAL"),
    Column("attempts", pa.int16(), lambda o: o.attempts, "INTEGER"),
    Column("billed_calls", pa.int16(), lambda o: o.billed_calls, "INTEGER"),
    Column("finish_reason", pa.string(), lambda o: o.finish_reason, "TEXT"),
    # where the verdict came from: "api" (paid in this run), "store" (an earlier run),
    # "duplicate" (same text earlier in this run), "none" (no call: skipped, unsent, input error)
    Column("source", pa.string()),
    Column("fingerprint", pa.string()),
    Column("row_number", pa.int64()),
    Column("input_file", pa.string()),
    Column("run_id", pa.string()),
)

LABEL_SCHEMA = pa.schema([(c.name, c.type) for c in COLUMNS])
COLUMN_NAMES: frozenset[str] = frozenset(c.name for c in COLUMNS)
#: the answer columns, in order: what the result store keeps per fingerprint.
STORED: tuple[Column, ...] = tuple(c for c in COLUMNS if c.get is not None)


def _compile_label_row() -> Callable[..., tuple]:
    """`label_row` as one straight-line function generated from `COLUMNS` (it runs once per label).

    A loop over the table costs a dictionary look-up and a call per column; the generated function
    reads each answer column with its getter and places the row's own columns by name, in order.
    """
    parts = []
    for i, column in enumerate(COLUMNS):
        if column.get is not None:
            parts.append(f"_get[{i}](outcome)")
        elif column.name == "fingerprint":
            parts.append("fingerprint.hex() if fingerprint else None")
        else:
            parts.append(f"row[{column.name!r}]")
    source = ("def label_row(*, outcome, fingerprint, kept=None, **row):\n"
              f"    values = ({', '.join(parts)},)\n"
              "    return values + tuple(kept) if kept else values\n")
    namespace: dict[str, Any] = {"_get": [c.get for c in COLUMNS]}
    exec(compile(source, "<pipeline.labels.label_row>", "exec"), namespace)
    return namespace["label_row"]


#: label_row(*, outcome, fingerprint, kept=None, **row) -> one shard row as a tuple in `COLUMNS` order,
#: then the ``kept`` input values. ``row`` holds the columns that say where the label is (each
#: required): id, policy, model, policy_version, reasoning_effort, output_format, source,
#: row_number, input_file, run_id.
label_row: Callable[..., tuple] = _compile_label_row()


def store_values(outcome: Outcome) -> list[Any]:
    """The answer columns as SQLite values, in `STORED` order (lists as JSON, booleans as 0/1)."""
    values = [c.get(outcome) for c in STORED]  # type: ignore[misc]
    for i, column in enumerate(STORED):
        if isinstance(column.type, pa.ListType) and values[i] is not None:
            values[i] = orjson.dumps(values[i]).decode()
        elif column.type == pa.bool_():
            values[i] = int(values[i])
    return values


def outcome_from_values(values: Mapping[str, Any] | Sequence[Any]) -> Outcome:
    """An Outcome from answer columns: a mapping by name, or SQLite values in `STORED` order."""
    v = values if isinstance(values, Mapping) else dict(zip((c.name for c in STORED), values, strict=True))
    verdict = None
    if v["violation"] is not None:
        rule_ids = v["rule_ids"]
        if isinstance(rule_ids, str):
            rule_ids = orjson.loads(rule_ids)
        verdict = Verdict(int(v["violation"]), v["category"], tuple(rule_ids or ()), v["confidence"], v["rationale"])
    usage = Usage(prompt_tokens=v["prompt_tokens"] or 0, cached_prompt_tokens=v["cached_prompt_tokens"] or 0,
                  completion_tokens=v["completion_tokens"] or 0, reasoning_tokens=v["reasoning_tokens"] or 0,
                  estimated=bool(v["usage_estimated"]), server_cost_usd=v.get("server_cost_usd"))
    return Outcome(
        status=Status(v["status"]), verdict=verdict, usage=usage, cost_usd=v["cost_usd"] or 0.0,
        latency_ms=v["latency_ms"] or 0.0, attempts=v["attempts"] or 0, billed_calls=v["billed_calls"] or 0,
        finish_reason=v["finish_reason"], error=v["error"], raw_output=v["raw_output"],
        reasoning=v["reasoning"], served_model=v["served_model"], provider=v.get("provider"),
    )


def shard_schema(kept: Sequence[pa.Field] = ()) -> pa.Schema:
    """The label schema with the kept input columns appended (their names must not be label columns)."""
    return pa.schema([*LABEL_SCHEMA, *kept]) if kept else LABEL_SCHEMA


def to_table(rows: list[tuple], kept: Sequence[pa.Field] = ()) -> pa.Table:
    """Rows (tuples in `COLUMNS` order, then the kept values) to an Arrow table with the shard schema."""
    schema = shard_schema(kept)
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)
