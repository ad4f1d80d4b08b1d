"""`moderate eval OUT_DIR --truth FILE ...`: the labels of a run against ground truth."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from pipeline.audit.evaluate import BOOTSTRAP, COMPARISONS, evaluate
from pipeline.core import exitcodes

#: written next to the shards; the HTML report shows it.
DESCRIPTION = """\
Join a run's labels to ground truth by id and score each policy: precision, recall, F1, accuracy,
confusion matrix, with 95% intervals (Wilson; F1 by bootstrap). --compare category scores the
category against truth classes instead: accuracy, per-class precision/recall/F1, macro-F1 and the
confusion matrix. Labels whose status is not ok and rows without a truth value are left out and
counted. Writes OUT_DIR/eval.json (shown in OUT_DIR/report.html)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a run's output directory (a local path or s3://, gs://, "
                                                           "abfs://)")
    parser.add_argument("--truth", required=True, metavar="FILE",
                        help="ground truth: .parquet, .jsonl[.gz|.zst], .csv (file, folder or glob)")
    parser.add_argument("--id-column", metavar="C",
                        help="id column of the truth file (default: 'id' if present, else file:row as the run)")
    parser.add_argument("--label-column", required=True, action="append", metavar="C|POLICY=C",
                        help="truth column of 0/1 (true/false, yes/no); POLICY=C for one policy; repeatable")
    parser.add_argument("--policy", action="append", metavar="P", help="only this policy (repeatable)")
    parser.add_argument("--compare", choices=COMPARISONS, default="violation",
                        help="violation: a 0/1 truth against the verdict (default); category: truth classes "
                             "(SP0, SP2, ...) against the label's category")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP, metavar="N", help="resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")


def main(args: argparse.Namespace) -> int:
    try:
        result = evaluate(args.out_dir, truth=args.truth, id_column=args.id_column,
                          label_columns=args.label_column, policies=args.policy,
                          resamples=args.bootstrap, seed=args.seed, compare=args.compare)
    except OSError as exc:  # a read-only or full folder
        print(f"moderate: error: {exc.filename or args.out_dir}: cannot write ({exc.strerror or exc})", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_text(result))
    return exitcodes.EXIT_OK


def render_text(result: dict[str, Any]) -> str:
    pct = int(result["confidence"] * 100)
    lines = [f"moderate eval: against {result['truth']}; {pct}% intervals (Wilson; F1 by bootstrap, "
             f"{result['bootstrap']:,} resamples, seed {result['seed']})", ""]
    for name, p in result["policies"].items():
        if p.get("compare") == "category":
            lines += _classes_text(name, p)
            continue
        c = p["confusion"]
        lines.append(f"{name} (truth column {p['label_column']}): {p['scored']:,} labels scored")
        for metric in ("precision", "recall", "f1", "accuracy"):
            lines.append(f"  {metric:<10} {_value(p[metric], p['intervals'][metric])}")
        lines.append(f"  confusion  truth 1: {c['tp']:,} flagged, {c['fn']:,} missed; "
                     f"truth 0: {c['fp']:,} flagged, {c['tn']:,} passed")
        statuses = ", ".join(f"{k} {v:,}" for k, v in p["excluded_statuses"].items())
        lines.append(f"  left out  {p['excluded_no_truth']:,} without a 0/1 truth, {p['excluded_not_ok']:,} "
                     f"not ok" + (f" ({statuses})" if statuses else ""))
        lines.append("")
    return "\n".join(lines)


def _value(value: float | None, interval: list[float] | None, width: int = 0) -> str:
    if value is None:
        return f"{'-  (undefined: no such rows)' if not width else '-':<{width}}"
    return f"{f'{value:.3f}' + (f'  ({interval[0]:.3f} to {interval[1]:.3f})' if interval else ''):<{width}}"


def _classes_text(name: str, p: dict[str, Any]) -> list[str]:
    """One policy's comparison of categories: accuracy, macro-F1, a line per class, the matrix."""
    lines = [f"{name} (truth column {p['label_column']}, compared with the category): {p['scored']:,} labels scored",
             f"  accuracy   {_value(p['accuracy'], p['accuracy_interval'])}",
             f"  macro-F1   {_value(p['macro_f1'], p['macro_f1_interval'])}",
             f"  {'class':<12} {'truth':>6} {'labels':>6}  {'precision':<24} {'recall':<24} f1"]
    for cls, m in p["per_class"].items():
        lines.append(f"  {cls[:12]:<12} {m['support']:>6,} {m['predicted']:>6,}  "
                     f"{_value(m['precision'], m['intervals']['precision'], 24)} "
                     f"{_value(m['recall'], m['intervals']['recall'], 24)} {_value(m['f1'], m['intervals']['f1'])}")
    classes, matrix = p["confusion"]["classes"], p["confusion"]["matrix"]
    if classes:
        width = max(6, *(min(len(c), 12) for c in classes))
        lines.append("  confusion  (rows: truth, columns: category)")
        lines.append("  " + " " * width + " " + " ".join(f"{c[:12]:>{width}}" for c in classes))
        for cls, row in zip(classes, matrix, strict=True):
            lines.append(f"  {cls[:12]:>{width}} " + " ".join(f"{n:>{width},}" for n in row))
    if "violation" in p:
        v = p["violation"]
        lines.append(f"  as violations (truth classes matching {v['violation_pattern']}): precision "
                     f"{_value(v['precision'], v['intervals']['precision'])}, recall "
                     f"{_value(v['recall'], v['intervals']['recall'])}, accuracy "
                     f"{_value(v['accuracy'], v['intervals']['accuracy'])}")
    statuses = ", ".join(f"{k} {v:,}" for k, v in p["excluded_statuses"].items())
    lines.append(f"  left out  {p['excluded_no_truth']:,} without a truth class, {p['excluded_not_ok']:,} not ok"
                 + (f" ({statuses})" if statuses else ""))
    lines.append("")
    return lines
