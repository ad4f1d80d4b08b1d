"""Labels beside their truth, for the report's evaluation: precision and recall by confidence level, and
the false positives and false negatives themselves.

The truth is the one ``moderate eval`` used (``eval.json``: file, id column, a label column per policy):
a kept column of the shards when it is there, else the truth file when it is a small local file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

#: examples of each kind of mistake shown per policy
MISTAKES = 10
TRUTH_FILE_BYTES = 64 << 20
# the words `moderate eval` reads as a verdict (pipeline.audit.evaluate.parse_truth)
_TRUE = ["1", "true", "t", "yes", "y", "1.0"]
_FALSE = ["0", "false", "f", "no", "n", "0.0"]


def truth_details(labels: pl.LazyFrame, evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """Per policy of ``eval.json``: ``by_confidence`` rows and ``false_positives`` / ``false_negatives``."""
    if not evaluation:
        return {}
    names = labels.collect_schema().names()
    found: dict[str, Any] = {}
    files: dict[str, pl.DataFrame | None] = {}
    for policy, result in (evaluation.get("policies") or {}).items():
        column = result.get("label_column")
        if not column:
            continue
        mine = labels.filter((pl.col("policy") == policy) & (pl.col("status") == "ok"))
        if column in names:
            joined = mine.with_columns(truth=_verdict(pl.col(column)))
        else:
            if column not in files:
                files[column] = _read_truth(evaluation.get("truth"), evaluation.get("id_column"), column)
            if files[column] is None:
                continue
            joined = mine.join(files[column].lazy(), on="id", how="left")  # type: ignore[union-attr]
        scored = joined.filter(pl.col("truth").is_not_null() & pl.col("violation").is_not_null())
        found[policy] = {"by_confidence": _by_confidence(scored),
                         "false_positives": _examples(scored, truth=0, violation=1),
                         "false_negatives": _examples(scored, truth=1, violation=0)}
    return found


def _verdict(expr: pl.Expr) -> pl.Expr:
    word = expr.cast(pl.String).str.strip_chars().str.to_lowercase()
    return pl.when(word.is_in(_TRUE)).then(1).when(word.is_in(_FALSE)).then(0).otherwise(None).cast(pl.Int8)


def _read_truth(path: str | None, id_column: str | None, column: str) -> pl.DataFrame | None:
    from pipeline.readers import InputError, open_inputs

    if not path or not Path(path).is_file() or Path(path).stat().st_size > TRUTH_FILE_BYTES:
        return None
    try:
        inputs = open_inputs([path], text_column=column, id_column=id_column)
        ids, values = [], []
        for batch in inputs.batches(batch_size=8192):
            ids.extend(batch.ids)
            values.extend(batch.texts)
    except (InputError, OSError, ValueError):
        return None
    frame = pl.DataFrame({"id": ids, "raw": values}, schema={"id": pl.String, "raw": pl.String})
    return frame.unique("id", keep="first", maintain_order=True).select("id", truth=_verdict(pl.col("raw")))


def _by_confidence(scored: pl.LazyFrame) -> list[dict[str, Any]]:
    frame = (scored.group_by(pl.col("confidence").fill_null("(none)"))
             .agg(n=pl.len(), tp=((pl.col("truth") == 1) & (pl.col("violation") == 1)).sum(),
                  fp=((pl.col("truth") == 0) & (pl.col("violation") == 1)).sum(),
                  fn=((pl.col("truth") == 1) & (pl.col("violation") == 0)).sum())
             .collect())
    order = {"high": 0, "medium": 1, "low": 2}
    rows = []
    for r in sorted(frame.to_dicts(), key=lambda r: (order.get(r["confidence"], 3), r["confidence"])):
        tp, fp, fn = r["tp"], r["fp"], r["fn"]
        rows.append({**r, "precision": tp / (tp + fp) if tp + fp else None,
                     "recall": tp / (tp + fn) if tp + fn else None})
    return rows


def _examples(scored: pl.LazyFrame, *, truth: int, violation: int) -> list[dict[str, Any]]:
    wrong = scored.filter((pl.col("truth") == truth) & (pl.col("violation") == violation))
    return (wrong.sort("row_number").head(MISTAKES)
            .select("id", "policy", "category", "confidence", "rationale", "row_number").collect().to_dicts())
