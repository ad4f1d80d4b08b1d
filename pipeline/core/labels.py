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

from pipeline.core.arrowcols import to_array
from pipeline.core.records import Outcome, Status, Usage, Verdict

__all__ = ["COLUMNS", "COLUMN_NAMES", "LABEL_SCHEMA", "STORED", "Column", "label_row", "outcome_from_values",
           "shard_schema", "store_values", "to_table"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: pa.DataType
    #: for answer columns: where the value is in an Outcome ("error", "verdict.category",
    #: "usage.prompt_tokens", "status" for its value), and its SQL type in the result store
    source: str | None = None
    sql: str | None = None

    def get(self, outcome: Outcome) -> Any:
        """This column's value in ``outcome`` (answer columns only)."""
        return _GETTERS[self.name](outcome)


def _expression(column: Column, outcome: str = "outcome") -> str:
    """Python source reading ``column`` from an Outcome named ``outcome`` (its verdict as ``v``, usage as ``u``)."""
    where, _, attr = (column.source or "").partition(".")
    if where == "verdict":
        read = "list(v.rule_ids)" if attr == "rule_ids" else f"v.{attr}"
        return f"({read} if v is not None else None)"
    if where == "usage":
        return f"u.{attr}"
    if where == "status":
        return f"{outcome}.status.value"
    return f"{outcome}.{where}"


#: every shard column, in order (docs/output.md describes each). Columns with a ``source`` describe
#: the answer and are also stored.
COLUMNS: tuple[Column, ...] = (
    Column("id", pa.string()),
    Column("policy", pa.string()),
    Column("violation", pa.int8(), "verdict.violation", "INTEGER"),
    Column("status", pa.string(), "status", "TEXT NOT NULL"),
    Column("category", pa.string(), "verdict.category", "TEXT"),
    Column("rule_ids", pa.list_(pa.string()), "verdict.rule_ids", "TEXT"),
    Column("confidence", pa.string(), "verdict.confidence", "TEXT"),
    Column("rationale", pa.string(), "verdict.rationale", "TEXT"),
    Column("error", pa.string(), "error", "TEXT"),
    Column("raw_output", pa.string(), "raw_output", "TEXT"),
    Column("reasoning", pa.string(), "reasoning", "TEXT"),
    Column("model", pa.string()),
    Column("served_model", pa.string(), "served_model", "TEXT"),
    Column("provider", pa.string(), "provider", "TEXT"),
    Column("endpoint", pa.string(), "endpoint", "TEXT"),
    Column("policy_version", pa.string()),
    Column("reasoning_effort", pa.string()),
    Column("output_format", pa.string()),
    Column("prompt_tokens", pa.int32(), "usage.prompt_tokens", "INTEGER"),
    Column("cached_prompt_tokens", pa.int32(), "usage.cached_prompt_tokens", "INTEGER"),
    Column("completion_tokens", pa.int32(), "usage.completion_tokens", "INTEGER"),
    Column("reasoning_tokens", pa.int32(), "usage.reasoning_tokens", "INTEGER"),
    Column("usage_estimated", pa.bool_(), "usage.estimated", "INTEGER"),
    Column("cost_usd", pa.float64(), "cost_usd", "REAL"),
    Column("server_cost_usd", pa.float64(), "usage.server_cost_usd", "REAL"),
    Column("latency_ms", pa.float32(), "latency_ms", "REAL"),
    Column("attempts", pa.int16(), "attempts", "INTEGER"),
    Column("billed_calls", pa.int16(), "billed_calls", "INTEGER"),
    Column("finish_reason", pa.string(), "finish_reason", "TEXT"),
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
STORED: tuple[Column, ...] = tuple(c for c in COLUMNS if c.source is not None)


def _compile(name: str, params: str, body: list[str], values: str,
             names: dict[str, Any] | None = None) -> Callable[..., Any]:
    """A function generated from `COLUMNS` (each runs once per label: one straight line, no loop)."""
    source = f"def {name}({params}):\n" + "".join(f"    {line}\n" for line in body) + f"    return {values}\n"
    namespace: dict[str, Any] = dict(names or {})
    exec(compile(source, f"<pipeline.core.labels.{name}>", "exec"), namespace)
    return namespace[name]


_READ = ["v = outcome.verdict", "u = outcome.usage"]


def _compile_label_row() -> Callable[..., tuple]:
    parts = []
    for column in COLUMNS:
        if column.source is not None:
            parts.append(_expression(column))
        elif column.name == "fingerprint":
            parts.append("fingerprint.hex() if fingerprint else None")
        else:
            parts.append(f"row[{column.name!r}]")
    return _compile("label_row", "*, outcome, fingerprint, kept=None, **row",
                    [*_READ, f"values = ({', '.join(parts)},)"], "values + tuple(kept) if kept else values")


_GETTERS: dict[str, Callable[[Outcome], Any]] = {
    c.name: _compile(f"get_{c.name}", "outcome", _READ, _expression(c)) for c in COLUMNS if c.source is not None
}


#: label_row(*, outcome, fingerprint, kept=None, **row) -> one shard row as a tuple in `COLUMNS` order,
#: then the ``kept`` input values. ``row`` holds the columns that say where the label is (each
#: required): id, policy, model, policy_version, reasoning_effort, output_format, source,
#: row_number, input_file, run_id.
label_row: Callable[..., tuple] = _compile_label_row()


def _sql_expression(column: Column) -> str:
    """`_expression` as SQLite stores it: lists as JSON text, booleans as 0/1."""
    value = _expression(column)
    if isinstance(column.type, pa.ListType):
        return f"(_json({value}).decode() if v is not None else None)"
    if column.type == pa.bool_():
        return f"int({value})"
    return value


_store_values: Callable[[Outcome], list[Any]] = _compile(
    "store_values", "outcome", _READ, "[" + ", ".join(_sql_expression(c) for c in STORED) + "]",
    {"_json": orjson.dumps})


def store_values(outcome: Outcome) -> list[Any]:
    """The answer columns as SQLite values, in `STORED` order (lists as JSON, booleans as 0/1)."""
    return _store_values(outcome)


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
        endpoint=v.get("endpoint"),
    )


def shard_schema(kept: Sequence[pa.Field] = ()) -> pa.Schema:
    """The label schema with the kept input columns appended (their names must not be label columns)."""
    return pa.schema([*LABEL_SCHEMA, *kept]) if kept else LABEL_SCHEMA


def to_table(rows: list[tuple], kept: Sequence[pa.Field] = ()) -> pa.Table:
    """Rows (tuples in `COLUMNS` order, then the kept values) to an Arrow table with the shard schema."""
    schema = shard_schema(kept)
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    arrays = [to_array(col, f.type) for col, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)
