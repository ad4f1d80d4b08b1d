"""`moderate eval OUT_DIR --truth FILE ...`: the labels of a run against ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from pipeline.audit.evaluate import BOOTSTRAP, CONFIDENCE, EvalError, evaluate_policy, read_labels, read_truth
from pipeline.core import exitcodes
from pipeline.output.outdir import atomic_write_text
from pipeline.readers import InputError
from pipeline.report.html.data import ReportError

#: written next to the shards; the HTML report shows it.
EVAL_FILE = "eval.json"

DESCRIPTION = """\
Join a run's labels to ground truth by id and score each policy: precision, recall, F1, accuracy,
confusion matrix, with bootstrap confidence intervals. Labels whose status is not ok and rows
without a 0/1 truth value are left out and counted. Writes OUT_DIR/eval.json (shown in
OUT_DIR/report.html)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a run's output directory")
    parser.add_argument("--truth", required=True, metavar="FILE",
                        help="ground truth: .parquet, .jsonl[.gz|.zst], .csv (file, folder or glob)")
    parser.add_argument("--id-column", metavar="C",
                        help="id column of the truth file (default: 'id' if present, else file:row as the run)")
    parser.add_argument("--label-column", required=True, action="append", metavar="C|POLICY=C",
                        help="truth column of 0/1 (true/false, yes/no); POLICY=C for one policy; repeatable")
    parser.add_argument("--policy", action="append", metavar="P", help="only this policy (repeatable)")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP, metavar="N", help="resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")


def main(args: argparse.Namespace) -> int:
    try:
        result = run_eval(Path(args.out_dir), truth=args.truth, id_column=args.id_column,
                          label_columns=args.label_column, policies=args.policy,
                          resamples=args.bootstrap, seed=args.seed)
    except (EvalError, InputError, ReportError) as exc:
        print(f"moderate: error: {exc}", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    except OSError as exc:  # a read-only or full folder
        print(f"moderate: error: {exc.filename or args.out_dir}: cannot write ({exc.strerror or exc})", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_text(result))
    return exitcodes.EXIT_OK


def run_eval(out: Path, *, truth: str, id_column: str | None, label_columns: list[str],
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


def render_text(result: dict[str, Any]) -> str:
    pct = int(result["confidence"] * 100)
    lines = [f"moderate eval: against {result['truth']}; {pct}% bootstrap intervals "
             f"({result['bootstrap']:,} resamples, seed {result['seed']})", ""]
    for name, p in result["policies"].items():
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


def _value(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return "-  (undefined: no such rows)"
    return f"{value:.3f}" + (f"  ({interval[0]:.3f} to {interval[1]:.3f})" if interval else "")
