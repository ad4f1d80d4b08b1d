"""What the report adds beside the counts: rule ids, policies flagging the same text, a kept column's
breakdown, the violation rate per night, answer lengths, and the rows the label browser embeds.

Each function reads the shards lazily (polars) or the store's ``rates`` table, and returns plain data.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING, Any

import polars as pl

from pipeline.core.labels import LABEL_SCHEMA

if TYPE_CHECKING:
    from pipeline.output.reader import OutputReader

#: labels the label browser embeds at most; beyond it, a uniform sample (the page says so)
BROWSER_ROWS = 2000
TOP_RULES = 30
#: a kept column is broken down when it has at most this many values
BREAKDOWN_VALUES = 40
NIGHTS = 30
LENGTH_BINS = 30

_OK = pl.col("status") == "ok"
_FLAGGED = _OK & (pl.col("violation") == 1)
BROWSER_COLUMNS = ["id", "policy", "status", "violation", "category", "rule_ids", "confidence", "rationale",
                   "error", "model", "policy_version", "source", "run_id", "input_file", "row_number",
                   "prompt_tokens", "completion_tokens", "cost_usd"]


def rule_counts(labels: pl.LazyFrame) -> list[tuple[str, str, int]]:
    """(policy, rule id, flagged labels citing it), most cited first."""
    frame = (labels.filter(_FLAGGED & pl.col("rule_ids").is_not_null()).select("policy", "rule_ids")
             .explode("rule_ids").drop_nulls("rule_ids").group_by("policy", "rule_ids").len()
             .sort(["len", "policy", "rule_ids"], descending=[True, False, False]).head(TOP_RULES).collect())
    return [(p, r, n) for p, r, n in frame.iter_rows()]


def co_flags(labels: pl.LazyFrame) -> list[dict[str, Any]]:
    """For each pair of policies: input rows both flagged, and each one's flagged rows."""
    flagged = labels.filter(_FLAGGED).select("row_number", "policy").unique().collect()
    totals = dict(flagged.group_by("policy").len().iter_rows())
    if len(totals) < 2:
        return []
    pairs = (flagged.join(flagged, on="row_number", suffix="_b").filter(pl.col("policy") < pl.col("policy_b"))
             .group_by("policy", "policy_b").len())
    both = {(a, b): n for a, b, n in pairs.iter_rows()}
    names = sorted(totals)
    return [{"a": a, "b": b, "both": both.get((a, b), 0), "a_flagged": totals[a], "b_flagged": totals[b]}
            for i, a in enumerate(names) for b in names[i + 1:]]


def kept_columns(labels: pl.LazyFrame) -> list[str]:
    """The input columns the run kept (``--keep-columns``): the shards' columns beyond the fixed ones."""
    return [name for name in labels.collect_schema().names() if name not in LABEL_SCHEMA.names]


def breakdown(labels: pl.LazyFrame, *, skip: set[str]) -> dict[str, Any] | None:
    """Violation rate per policy by the values of the first kept column with few values (not a gold column)."""
    for column in kept_columns(labels):
        if column in skip:
            continue
        values = labels.select(pl.col(column).cast(pl.String).n_unique()).collect().item()
        if not 1 < values <= BREAKDOWN_VALUES:
            continue
        frame = (labels.filter(_OK).group_by(pl.col(column).cast(pl.String).alias("value"), "policy")
                 .agg(ok=pl.len(), violations=(pl.col("violation") == 1).sum()).sort("value", "policy").collect())
        return {"column": column, "rows": frame.to_dicts()}
    return None


def nightly_rates(out: OutputReader, policies: list[str]) -> list[dict[str, Any]]:
    """Violation rate per policy for each night (output directory) recorded in the run's store, oldest first."""
    store = out.store_path()
    if store is None or not policies:
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT out_id, MAX(ended_at) FROM rates GROUP BY out_id ORDER BY 2 DESC LIMIT ?",
                              (NIGHTS,)).fetchall()
            nights = []
            for out_id, ended in reversed(rows):
                counts = {p: (ok, v) for p, ok, v in db.execute(
                    "SELECT policy, SUM(ok), SUM(violations) FROM rates WHERE out_id = ? GROUP BY policy", (out_id,))}
                nights.append({"ended_at": ended, "rates": {p: v / ok for p, (ok, v) in counts.items()
                                                            if p in policies and ok}})
    except sqlite3.Error:
        return []
    return nights


def answer_lengths(api: pl.LazyFrame) -> list[tuple[float, float, int]]:
    """Completion tokens (reasoning included) of paid answers, as histogram bins up to the 99th percentile."""
    values = api.select("completion_tokens").collect().get_column("completion_tokens").drop_nulls()
    if values.is_empty():
        return []
    low, high = float(values.min()), float(values.quantile(0.99) or values.max())
    if high <= low:
        return [(low, low, values.len())]
    width = (high - low) / LENGTH_BINS
    index = ((values - low) / width).floor().clip(0, LENGTH_BINS - 1).cast(pl.Int32)
    counts = dict(index.value_counts().iter_rows())
    return [(low + i * width, low + (i + 1) * width, int(counts.get(i, 0))) for i in range(LENGTH_BINS)]


def browser_rows(labels: pl.LazyFrame, total: int) -> list[dict[str, Any]]:
    """Every label when there are at most `BROWSER_ROWS`, else a uniform sample of that many (fixed seed)."""
    names = labels.collect_schema().names()
    picked = labels.select([c for c in BROWSER_COLUMNS if c in names])
    if total > BROWSER_ROWS:
        picked = (picked.with_columns(_pick=pl.struct("row_number", "policy").hash(seed=11)).sort("_pick")
                  .head(BROWSER_ROWS).drop("_pick"))
    return picked.sort("row_number", "policy").collect().to_dicts()
