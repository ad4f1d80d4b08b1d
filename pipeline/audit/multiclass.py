"""Pure arithmetic of a multi-class comparison: accuracy, per-class precision / recall / F1, macro-F1 and
the confusion matrix, with intervals that stay honest at the edges.

Precision, recall and accuracy are proportions: their intervals are Wilson score intervals, which never
shrink to a point (28 flagged, 28 right gives about 0.88 to 1.00, not 1.00 to 1.00). F1 and macro-F1 are
not proportions: their intervals are percentile bootstraps over the confusion matrix, and where every
resample agrees (no error at all to resample) the F1 of the Wilson bounds of precision and recall.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.core.intervals import wilson

__all__ = ["MAX_CLASSES", "NO_CATEGORY", "TooManyClasses", "compare_classes", "f1_bounds", "interval"]

#: the predicted class of an ok label without a category (a "safe" answer in the rationale format)
NO_CATEGORY = "(none)"
#: more distinct values than this is not a label column (a text or an id column named by mistake)
MAX_CLASSES = 500
#: matrix cells times resamples above which F1 intervals come from the Wilson bounds alone (memory)
_MAX_BOOTSTRAP_CELLS = 20_000_000


class TooManyClasses(ValueError):
    """The values compared hold more than `MAX_CLASSES` classes."""


def interval(successes: int, n: int) -> list[float] | None:
    """The Wilson interval of ``successes / n`` as a list (None when n is 0).

    >>> [round(v, 3) for v in interval(28, 28)]
    [0.879, 1.0]
    """
    bounds = wilson(successes, n)
    return None if bounds is None else [bounds[0], bounds[1]]


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def f1_bounds(tp: int, fp: int, fn: int) -> list[float] | None:
    """F1 of the lower and of the upper Wilson bounds of precision and recall (F1 grows with both).

    >>> [round(v, 3) for v in f1_bounds(28, 0, 0)]
    [0.936, 1.0]
    """
    precision, recall = wilson(tp, tp + fp), wilson(tp, tp + fn)
    if precision is None and recall is None:
        return None
    precision, recall = precision or (0.0, 1.0), recall or (0.0, 1.0)
    return [_f1(precision[0], recall[0]), _f1(precision[1], recall[1])]


def compare_classes(pairs: Iterable[tuple[str, str]], *, resamples: int = 1000, seed: int = 0,
                    confidence: float = 0.95) -> dict[str, Any]:
    """Metrics of (truth, predicted) class pairs.

    Classes are every value seen on either side, sorted; a class never predicted has no precision
    (None), a class absent from the truth no recall. Macro-F1 is the mean F1 over those classes.
    Raises `TooManyClasses` past `MAX_CLASSES` (the matrix grows with their square).

    >>> r = compare_classes([("SP0", "SP0"), ("SP2", "SP2"), ("SP2", "SP0")], resamples=10)
    >>> r["accuracy"], r["per_class"]["SP2"]["recall"], r["confusion"]["matrix"]
    (0.6666666666666666, 0.5, [[1, 0], [1, 1]])
    """
    counts = Counter(pairs)
    classes = sorted({t for t, _ in counts} | {p for _, p in counts})
    if len(classes) > MAX_CLASSES:
        raise TooManyClasses(f"{len(classes):,} distinct classes (at most {MAX_CLASSES})")
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for (truth, predicted), n in counts.items():
        matrix[index[truth], index[predicted]] += n
    n = int(matrix.sum())
    right = int(np.trace(matrix))
    per_class: dict[str, dict[str, Any]] = {}
    f1s, f1_draws = [], _bootstrap_f1(matrix, resamples, seed)
    tail = (1 - confidence) / 2 * 100
    for i, name in enumerate(classes):
        tp = int(matrix[i, i])
        fp, fn = int(matrix[:, i].sum()) - tp, int(matrix[i, :].sum()) - tp
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        f1s.append(f1 or 0.0)
        per_class[name] = {
            "support": tp + fn, "predicted": tp + fp, "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "f1": f1,
            "intervals": {"precision": interval(tp, tp + fp), "recall": interval(tp, tp + fn),
                          "f1": _percentiles(f1_draws[:, i] if f1_draws is not None else None, tail)
                          or f1_bounds(tp, fp, fn)},
        }
    macro = float(np.mean(f1s)) if classes else None
    macro_draws = np.nanmean(f1_draws, axis=1) if f1_draws is not None and classes else None
    macro_interval = _percentiles(macro_draws, tail)
    if macro_interval is None and classes:  # every resample agrees: the mean of the per-class bounds
        bounds = [p["intervals"]["f1"] or [0.0, 1.0] for p in per_class.values()]
        macro_interval = [float(np.mean([b[0] for b in bounds])), float(np.mean([b[1] for b in bounds]))]
    return {
        "classes": classes,
        "scored": n,
        "accuracy": right / n if n else None,
        "accuracy_interval": interval(right, n),
        "macro_f1": macro,
        "macro_f1_interval": macro_interval,
        "per_class": per_class,
        "confusion": {"classes": classes, "rows": "truth", "columns": "verdict", "matrix": matrix.tolist()},
    }


def _bootstrap_f1(matrix: np.ndarray, resamples: int, seed: int) -> np.ndarray | None:
    """Per-class F1 of each resample (rows: resamples; NaN where a class is absent from a resample).

    Drawing n rows with replacement is a multinomial draw of the matrix's cells.
    """
    n, k = int(matrix.sum()), matrix.shape[0]
    if n == 0 or resamples < 1 or k * k * resamples > _MAX_BOOTSTRAP_CELLS:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, (matrix / n).ravel(), size=resamples).reshape(resamples, k, k).astype(float)
    tp = np.diagonal(draws, axis1=1, axis2=2)
    fp, fn = draws.sum(axis=1) - tp, draws.sum(axis=2) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2 * tp / (2 * tp + fp + fn)


def _percentiles(values: np.ndarray | None, tail: float) -> list[float] | None:
    """The percentile interval of the finite values; None when there are none or all are equal."""
    if values is None:
        return None
    values = values[np.isfinite(values)]
    if not len(values) or values.min() == values.max():
        return None
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
