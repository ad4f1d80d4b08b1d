"""Labels against ground truth: precision, recall, F1, accuracy and the confusion matrix per policy,
with confidence intervals; or, with ``compare="category"``, the category against a truth class
(accuracy, per-class precision / recall / F1, macro-F1, the confusion matrix: `pipeline.audit.multiclass`).

Rows whose truth is missing (or not 0/1) and labels whose status is not ``ok`` are left out and
counted, never scored as 0. Precision, recall and accuracy have Wilson intervals (honest at 0 or 100 %);
F1 a percentile bootstrap, or the F1 of those Wilson bounds where every resample agrees. The metric
arithmetic is pure; `evaluate` joins with polars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from pipeline.audit.multiclass import NO_CATEGORY, TooManyClasses, compare_classes, f1_bounds, interval
from pipeline.core.errors import UserError
from pipeline.output.reader import OutputReader, open_for_reading
from pipeline.readers import open_inputs

BOOTSTRAP = 1000
CONFIDENCE = 0.95
COMPARISONS = ("violation", "category")
#: how each interval is computed (eval.json says it)
INTERVAL_METHODS = {"precision": "wilson", "recall": "wilson", "accuracy": "wilson",
                    "f1": "bootstrap percentile; F1 of the Wilson bounds when every resample agrees"}
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


def intervals(c: Confusion, *, resamples: int = BOOTSTRAP, seed: int = 0) -> dict[str, list[float] | None]:
    """Wilson intervals of precision, recall and accuracy; F1's bootstrap interval, else its Wilson bounds.

    >>> [round(v, 3) for v in intervals(Confusion(tp=28, fp=0, fn=0, tn=12))["precision"]]
    [0.879, 1.0]
    """
    booted = bootstrap_intervals(c, resamples=resamples, seed=seed)["f1"] if c.n else None
    if booted is not None and booted[0] == booted[1]:
        booted = None
    return {"precision": interval(c.tp, c.tp + c.fp), "recall": interval(c.tp, c.tp + c.fn),
            "f1": booted or f1_bounds(c.tp, c.fp, c.fn), "accuracy": interval(c.tp + c.tn, c.n)}


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


def read_truth_classes(path: str, *, id_column: str | None, label_column: str) -> pl.DataFrame:
    """``id``, ``truth`` (a class name, surrounding spaces stripped; null when empty) from a truth file."""
    inputs = open_inputs([path], text_column=label_column, id_column=id_column)
    ids: list[str] = []
    values: list[str | None] = []
    for batch in inputs.batches(batch_size=8192):
        ids.extend(batch.ids)
        values.extend((v.strip() or None) if v is not None else None for v in batch.texts)
    frame = pl.DataFrame({"id": ids, "truth": values}, schema={"id": pl.String, "truth": pl.String})
    return frame.unique("id", keep="first", maintain_order=True)


def read_labels(out: str | Path | OutputReader) -> pl.DataFrame:
    with open_for_reading(out) as folder:
        files = folder.shard_files()
        if not files:
            raise EvalError(f"{folder}: no label shards in {folder.where('labels')} (is it a run's output directory?)")
        return pl.read_parquet(files, columns=["id", "policy", "status", "violation", "category"])


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
        "intervals": intervals(c, resamples=resamples, seed=seed),
        "confusion": {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn},
        "labels": joined.height,
        "scored": c.n,
        "truth_positive_rate": (c.tp + c.fn) / c.n if c.n else None,
        "excluded_no_truth": ok.filter(pl.col("truth").is_null()).height,
        "excluded_not_ok": not_ok.height,
        "excluded_statuses": dict(sorted(not_ok.group_by("status").len().iter_rows())),
    }


def evaluate_classes(labels: pl.DataFrame, truth: pl.DataFrame, *, resamples: int = BOOTSTRAP, seed: int = 0,
                     violation_pattern: str | None = None) -> dict[str, Any]:
    """The category of one policy's labels against truth classes (both joined on ``id``).

    An ok label without a category is the class ``(none)``. With the run's ``violation_pattern``
    (output format "policy") the truth classes also give a 0/1 truth, and the binary metrics of the
    violation column come under ``violation``.
    """
    joined = labels.join(truth, on="id", how="left")
    not_ok = joined.filter(pl.col("status") != "ok")
    ok = joined.filter(pl.col("status") == "ok")
    scored = ok.filter(pl.col("truth").is_not_null())
    pairs = zip(scored.get_column("truth").to_list(),
                scored.get_column("category").fill_null(NO_CATEGORY).to_list(), strict=True)
    result: dict[str, Any] = {
        "compare": "category",
        **compare_classes(pairs, resamples=resamples, seed=seed, confidence=CONFIDENCE),
        "labels": joined.height,
        "excluded_no_truth": ok.height - scored.height,
        "excluded_not_ok": not_ok.height,
        "excluded_statuses": dict(sorted(not_ok.group_by("status").len().iter_rows())),
    }
    if violation_pattern is not None:
        pattern = re.compile(violation_pattern)
        binary = truth.with_columns(truth=pl.col("truth").map_elements(
            lambda v: int(pattern.fullmatch(v) is not None), return_dtype=pl.Int8))
        result["violation"] = {"violation_pattern": violation_pattern,
                               **evaluate_policy(labels, binary, resamples=resamples, seed=seed)}
    return result


EVAL_FILE = "eval.json"

def evaluate(out: str | Path, *, truth: str, id_column: str | None, label_columns: list[str],
             policies: list[str] | None = None, resamples: int = BOOTSTRAP, seed: int = 0,
             compare: str = "violation") -> dict[str, Any]:
    """Score the policies of `out` against `truth`, write ``OUT/eval.json`` and return it.

    ``out``: a local folder or an object-store URI (``s3://bucket/out``); eval.json (and report.html,
    when the folder has a cost report) are written back there. ``compare``: "violation" (0/1 truth
    against the verdict) or "category" (truth classes against the category).
    """
    if resamples < 1:
        raise EvalError("--bootstrap must be at least 1")
    if compare not in COMPARISONS:
        raise EvalError(f"--compare {compare}: must be one of {', '.join(COMPARISONS)}")
    with open_for_reading(out) as folder:
        report = _evaluate(folder, truth=truth, id_column=id_column, label_columns=label_columns,
                           policies=policies, resamples=resamples, seed=seed, compare=compare)
        folder.write_text(EVAL_FILE, orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        _refresh_html(folder)
    return report


def _evaluate(folder: OutputReader, *, truth: str, id_column: str | None, label_columns: list[str],
              policies: list[str] | None, resamples: int, seed: int, compare: str) -> dict[str, Any]:
    labels = read_labels(folder)
    known = sorted(labels.get_column("policy").unique().to_list())
    columns = _columns_by_policy(label_columns, policies or known, known)
    violation_pattern = _recorded_violation_pattern(folder)
    read = read_truth if compare == "violation" else read_truth_classes
    truths: dict[str, pl.DataFrame] = {}
    per_policy: dict[str, Any] = {}
    for policy, column in columns.items():
        if column not in truths:
            truths[column] = read(truth, id_column=id_column, label_column=column)
        own = labels.filter(pl.col("policy") == policy)
        if compare == "violation":
            result = evaluate_policy(own, truths[column], resamples=resamples, seed=seed)
        else:
            try:
                result = evaluate_classes(own, truths[column], resamples=resamples, seed=seed,
                                          violation_pattern=violation_pattern)
            except TooManyClasses as exc:
                raise EvalError(f"--label-column {column}: {exc} in the truth and the categories of {policy!r}: "
                                "is it a column of class labels?") from None
        per_policy[policy] = {"label_column": column, **result}
    report: dict[str, Any] = {"truth": truth, "id_column": id_column, "compare": compare, "bootstrap": resamples,
                              "seed": seed, "confidence": CONFIDENCE, "interval_methods": INTERVAL_METHODS,
                              "policies": per_policy}
    if len(per_policy) == 1:  # one policy: its metrics at the top level too
        only = next(iter(per_policy.values()))
        keys = (("precision", "recall", "f1", "accuracy", "confusion") if compare == "violation"
                else ("accuracy", "per_class", "macro_f1", "confusion"))
        report.update({k: only[k] for k in keys})
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


def _recorded_violation_pattern(folder: OutputReader) -> str | None:
    """The run's violation pattern (output format "policy"), as its manifest records it; None otherwise."""
    manifest = folder.read_json("manifest.json")
    described = (manifest.get("description") or {}) if isinstance(manifest, dict) else {}
    pattern = described.get("violation_pattern") if isinstance(described, dict) else None
    return pattern if isinstance(pattern, str) and pattern else None


def _refresh_html(folder: OutputReader) -> None:
    from pipeline.report.html import write_html_report

    if folder.exists("cost_report.json"):
        write_html_report(folder)
