"""Labels against ground truth: precision, recall, F1, accuracy and the confusion matrix per policy,
with bootstrap confidence intervals.

Rows whose truth is missing (or not 0/1) and labels whose status is not ``ok`` are left out and
counted, never scored as 0. The metric arithmetic is pure; `evaluate` joins with polars.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from pipeline.core.errors import UserError
from pipeline.output.outdir import atomic_write_text
from pipeline.readers import open_inputs

BOOTSTRAP = 1000
CONFIDENCE = 0.95
_TRUE = frozenset({"1", "true", "t", "yes", "y", "1.0"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "0.0"})


class EvalError(UserError):
    """A one-line user mistake (no labels, unknown policy)."""


@dataclass(slots=True, frozen=True)
class Confusion:
    """Counts of (truth, verdict) pairs: 1 = violates."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def metrics(c: Confusion) -> dict[str, float | None]:
    """Precision, recall, F1 and accuracy; None where the denominator is 0.

    >>> metrics(Confusion(tp=8, fp=2, fn=4, tn=86))
    {'precision': 0.8, 'recall': 0.6666666666666666, 'f1': 0.7272727272727273, 'accuracy': 0.94}
    """
    precision = c.tp / (c.tp + c.fp) if c.tp + c.fp else None
    recall = c.tp / (c.tp + c.fn) if c.tp + c.fn else None
    f1 = 2 * c.tp / (2 * c.tp + c.fp + c.fn) if c.tp + c.fp + c.fn else None
    accuracy = (c.tp + c.tn) / c.n if c.n else None
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}


def bootstrap_intervals(c: Confusion, *, resamples: int = BOOTSTRAP, seed: int = 0,
                        confidence: float = CONFIDENCE) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals of each metric, resampling the scored rows with replacement.

    Drawing n rows with replacement from the four cells is a multinomial draw of their counts, so
    the resamples are drawn as counts (same distribution, no per-row arrays).
    """
    if c.n == 0:
        return dict.fromkeys(("precision", "recall", "f1", "accuracy"))
    rng = np.random.default_rng(seed)
    counts = np.array([c.tp, c.fp, c.fn, c.tn], dtype=float)
    draws = rng.multinomial(c.n, counts / c.n, size=resamples).astype(float)
    tp, fp, fn, tn = draws.T
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "accuracy": (tp + tn) / c.n,
        }
    tail = (1 - confidence) / 2 * 100
    out: dict[str, list[float] | None] = {}
    for name, v in values.items():
        v = v[np.isfinite(v)]
        out[name] = [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] if len(v) else None
    return out


def parse_truth(value: str | None) -> int | None:
    """0 or 1 from a truth cell (1/0, true/false, yes/no); None when missing or anything else."""
    if value is None:
        return None
    word = value.strip().lower()
    return 1 if word in _TRUE else 0 if word in _FALSE else None


def read_truth(path: str, *, id_column: str | None, label_column: str) -> pl.DataFrame:
    """``id``, ``truth`` (0/1 or null) from a file in any input format; the first row of an id wins."""
    inputs = open_inputs([path], text_column=label_column, id_column=id_column)
    ids: list[str] = []
    values: list[int | None] = []
    for batch in inputs.batches(batch_size=8192):
        ids.extend(batch.ids)
        values.extend(parse_truth(v) for v in batch.texts)
    frame = pl.DataFrame({"id": ids, "truth": values}, schema={"id": pl.String, "truth": pl.Int8})
    return frame.unique("id", keep="first", maintain_order=True)


def read_labels(out: Path) -> pl.DataFrame:
    files = sorted((out / "labels").glob("part-*.parquet"))
    if not files:
        raise EvalError(f"{out}: no label shards in {out / 'labels'} (is it a run's output directory?)")
    return pl.read_parquet(files, columns=["id", "policy", "status", "violation"])


def evaluate_policy(labels: pl.DataFrame, truth: pl.DataFrame, *, resamples: int = BOOTSTRAP,
                    seed: int = 0) -> dict[str, Any]:
    """Metrics of one policy's labels against truth (both joined on ``id``)."""
    joined = labels.join(truth, on="id", how="left")
    not_ok = joined.filter(pl.col("status") != "ok")
    ok = joined.filter(pl.col("status") == "ok")
    scored = ok.filter(pl.col("truth").is_not_null() & pl.col("violation").is_not_null())
    cells = {(t, v): n for t, v, n in scored.group_by("truth", "violation").len().iter_rows()}
    c = Confusion(tp=cells.get((1, 1), 0), fp=cells.get((0, 1), 0), fn=cells.get((1, 0), 0),
                  tn=cells.get((0, 0), 0))
    return {
        **metrics(c),
        "intervals": bootstrap_intervals(c, resamples=resamples, seed=seed),
        "confusion": {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn},
        "labels": joined.height,
        "scored": c.n,
        "truth_positive_rate": (c.tp + c.fn) / c.n if c.n else None,
        "excluded_no_truth": ok.filter(pl.col("truth").is_null()).height,
        "excluded_not_ok": not_ok.height,
        "excluded_statuses": dict(sorted(not_ok.group_by("status").len().iter_rows())),
    }


EVAL_FILE = "eval.json"

def evaluate(out: Path, *, truth: str, id_column: str | None, label_columns: list[str],
             policies: list[str] | None = None, resamples: int = BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Score the policies of `out` against `truth`, write ``OUT/eval.json`` and return it."""
    if resamples < 1:
        raise EvalError("--bootstrap must be at least 1")
    labels = read_labels(out)
    known = sorted(labels.get_column("policy").unique().to_list())
    columns = _columns_by_policy(label_columns, policies or known, known)
    truths: dict[str, pl.DataFrame] = {}
    per_policy: dict[str, Any] = {}
    for policy, column in columns.items():
        if column not in truths:
            truths[column] = read_truth(truth, id_column=id_column, label_column=column)
        result = evaluate_policy(labels.filter(pl.col("policy") == policy), truths[column],
                                 resamples=resamples, seed=seed)
        per_policy[policy] = {"label_column": column, **result}
    report: dict[str, Any] = {"truth": truth, "id_column": id_column, "bootstrap": resamples, "seed": seed,
                              "confidence": CONFIDENCE, "policies": per_policy}
    if len(per_policy) == 1:  # one policy: its metrics at the top level too
        only = next(iter(per_policy.values()))
        report.update({k: only[k] for k in ("precision", "recall", "f1", "accuracy", "confusion")})
    atomic_write_text(out / EVAL_FILE, orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    _refresh_html(out)
    return report


def _columns_by_policy(specs: list[str], policies: list[str], known: list[str]) -> dict[str, str]:
    unknown = [p for p in policies if p not in known]
    if unknown:
        raise EvalError(f"no labels for policy {unknown[0]!r} (policies in the run: {', '.join(known)})")
    default = None
    mapped: dict[str, str] = {}
    for spec in specs:
        policy, sep, column = spec.partition("=")
        if not sep:
            default = spec
        elif policy not in known:
            raise EvalError(f"--label-column {spec}: no labels for policy {policy!r} "
                            f"(policies in the run: {', '.join(known)})")
        else:
            mapped[policy] = column
    chosen = [p for p in policies if p in mapped or default is not None]
    if not chosen:
        raise EvalError("no policy to score: give --label-column C, or POLICY=C for a policy of the run")
    return {p: mapped.get(p) or default for p in chosen}  # type: ignore[misc]


def _refresh_html(out: Path) -> None:
    from pipeline.report.html import write_html_report

    if (out / "cost_report.json").exists():
        write_html_report(out)
