"""The report's evaluation section, shown right after the headline when the run has truth labels:
metrics with intervals, a confusion-matrix heat map per policy, precision and recall by confidence
level, and the false positives and false negatives with their text and rationale.

Pure: ``eval.json`` (binary keys, and the multi-class ``per_class`` / matrix ``confusion`` when present)
and `pipeline.report.html.truth` data in, markup out.
"""

from __future__ import annotations

from typing import Any

from pipeline.report.html import svg
from pipeline.report.html.svg import esc

TEXT_LIMIT = 300


def section(result: dict[str, Any] | None, truth: dict[str, Any]) -> str:
    if not result:
        return ('<section id="evaluation"><h2>Evaluation</h2><p class="muted">No evaluation yet: <code>moderate '
                "eval OUT_DIR --truth FILE --label-column C</code> adds it here.</p></section>")
    bars, rows = [], []
    for name, p in (result.get("policies") or {}).items():
        for metric in ("precision", "recall", "f1"):
            if p.get(metric) is not None:
                bars.append((f"{name} {metric}", p[metric], (p.get("intervals") or {}).get(metric)))
        rows.append([esc(name), esc(p.get("label_column")), f"{p.get('scored', 0):,}",
                     *(_metric(p, m) for m in ("precision", "recall", "f1", "accuracy")),
                     _metric(p, "macro_f1"), f"{p.get('excluded_no_truth', 0):,}", f"{p.get('excluded_not_ok', 0):,}"])
    chart = svg.hbars("eval", "Precision, recall and F1 against the truth (95 % bootstrap interval)", bars)
    table = _table(["policy", "truth column", "scored", "precision", "recall", "F1", "accuracy", "macro F1",
                    "no truth", "not ok"], rows)
    per_policy = "".join(_policy(name, p, truth.get(name) or {}) for name, p in (result.get("policies") or {}).items())
    return (f'<section id="evaluation"><h2>Evaluation</h2><p>Truth: {esc(result.get("truth"), 200)}</p>'
            + table + chart + per_policy + "</section>")


def _policy(name: str, p: dict[str, Any], details: dict[str, Any]) -> str:
    labels, matrix = confusion_matrix(p)
    heat = heatmap(f"confusion-{name}", f"{name}: truth (rows) against verdict (columns)", labels, matrix) \
        if matrix else ""
    return (f'<div class="policy-eval"><h3>{esc(name)}</h3><div class="row">{heat}'
            + _by_confidence(details.get("by_confidence") or []) + "</div>"
            + _mistakes("False positives (flagged, truth says safe)", details.get("false_positives"))
            + _mistakes("False negatives (passed, truth says it violates)", details.get("false_negatives"))
            + "</div>")


def confusion_matrix(p: dict[str, Any]) -> tuple[list[str], list[list[int]]]:
    """(class names, counts[truth][verdict]) from whichever shape ``confusion`` has.

    >>> confusion_matrix({"confusion": {"tp": 5, "fp": 1, "fn": 2, "tn": 9}})
    (['0', '1'], [[9, 1], [2, 5]])
    >>> confusion_matrix({"confusion": {"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}})
    (['a', 'b'], [[3, 1], [0, 4]])
    """
    c = p.get("confusion")
    if isinstance(c, dict) and {"tp", "fp", "fn", "tn"} <= set(c):
        return ["0", "1"], [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
    if isinstance(c, dict) and isinstance(c.get("matrix"), list):
        names = [str(x) for x in c.get("labels") or c.get("classes") or range(len(c["matrix"]))]
        return names, [[int(v or 0) for v in row] for row in c["matrix"]]
    if isinstance(c, dict) and c and all(isinstance(v, dict) for v in c.values()):  # {truth: {verdict: n}}
        names = sorted({str(k) for k in c} | {str(k) for v in c.values() for k in v})
        return names, [[int((c.get(t) or {}).get(v, 0) or 0) for v in names] for t in names]
    if isinstance(c, list) and c and all(isinstance(row, list) for row in c):
        names = [str(x) for x in (p.get("per_class") or {})] or [str(i) for i in range(len(c))]
        return names, [[int(v or 0) for v in row] for row in c]
    return [], []


def heatmap(name: str, title: str, labels: list[str], matrix: list[list[int]]) -> str:
    """Cells shaded by their share of the row (the truth class): the diagonal is what was right."""
    cell, left, top = 64, 90, 40
    size = len(labels)
    width, height = left + cell * size + 20, top + cell * size + 30
    body = [f'<text x="{left + cell * size / 2:.0f}" y="14" text-anchor="middle">verdict</text>']
    for j, label in enumerate(labels):
        body.append(f'<text x="{left + j * cell + cell / 2:.0f}" y="{top - 8}" text-anchor="middle">'
                    f"{esc(label, 10)}</text>")
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        body.append(f'<text x="{left - 8}" y="{top + i * cell + cell / 2 + 4:.0f}" text-anchor="end">'
                    f"truth {esc(labels[i] if i < len(labels) else i, 10)}</text>")
        for j, count in enumerate(row):
            share = count / total
            hue = "59,110,165" if i == j else "163,60,60"  # blue where right, red where wrong
            colour = f"rgba({hue},{0.08 + 0.9 * share:.2f})"
            ink = "#fff" if share > 0.55 else "#222"
            body.append(f'<rect class="cell" x="{left + j * cell}" y="{top + i * cell}" width="{cell - 2}" '
                        f'height="{cell - 2}" fill="{colour}"><title>truth {esc(labels[i])}, verdict '
                        f"{esc(labels[j] if j < len(labels) else j)}: {count:,} ({share:.1%} of the row)</title></rect>"
                        f'<text x="{left + j * cell + cell / 2 - 1:.0f}" y="{top + i * cell + cell / 2 + 4:.0f}" '
                        f'text-anchor="middle" style="fill:{ink}">{count:,}</text>')
    return (f'<figure class="chart" data-chart="{esc(name)}"><figcaption>{esc(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title)}" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">' + "".join(body) + "</svg></figure>")


def _by_confidence(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cells = [[esc(r["confidence"]), f"{r['n']:,}", f"{r['tp']:,} / {r['fp']:,} / {r['fn']:,}",
              _share(r["precision"]), _share(r["recall"])] for r in rows]
    return ('<div><h4>By confidence level</h4>'
            + _table(["confidence", "scored", "TP / FP / FN", "precision", "recall"], cells) + "</div>")


def _mistakes(title: str, rows: list[dict[str, Any]] | None) -> str:
    if rows is None:
        return ""
    if not rows:
        return f"<h4>{esc(title)}</h4><p class=\"muted\">None.</p>"
    cells = [[f'<span class="id" title="{esc(r["id"])}">{esc(r["id"], 24)}</span>', esc(r.get("category"), 40),
              esc(r.get("confidence")), f'<div class="text">{esc(r.get("text"), TEXT_LIMIT)}</div>',
              f'<div class="text">{esc(r.get("rationale"), TEXT_LIMIT)}</div>'] for r in rows]
    return (f"<h4>{esc(title)}</h4>" + _table(["id", "category", "confidence", "text", "rationale"], cells)
            + '<p class="muted">The first few by row number; content is shortened and escaped, and may be '
              "offensive.</p>")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _metric(p: dict[str, Any], name: str) -> str:
    value = p.get(name)
    if not isinstance(value, int | float):
        return "-"
    ci = (p.get("intervals") or {}).get(name)
    return f"{value:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
