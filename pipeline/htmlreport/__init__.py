"""`OUT/report.html`: labels, cost, latency, throughput, statuses, costly and flagged rows, eval.

Written at the end of every run and by `moderate report OUT_DIR`. One self-contained file: inline
CSS and SVG, no script, nothing fetched, every text from the data escaped and shortened.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.htmlreport.data import ReportError, collect
from pipeline.htmlreport.page import render
from pipeline.outdir import atomic_write_text

REPORT_FILE = "report.html"

__all__ = ["REPORT_FILE", "ReportError", "add_arguments", "main", "write_html_report"]


def write_html_report(out: str | Path, *, text_column: str | None = "text") -> Path:
    """Write ``OUT/report.html`` from what the directory holds; returns its path."""
    out = Path(out)
    path = out / REPORT_FILE
    atomic_write_text(path, render(collect(out, text_column=text_column)))
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a run's output directory")
    parser.add_argument("--text-column", default="text", metavar="C",
                        help="input column to show beside sampled rows (default: text)")


def main(args: argparse.Namespace) -> int:
    from pipeline import exitcodes

    try:
        path = write_html_report(args.out_dir, text_column=args.text_column)
    except ReportError as exc:
        print(f"moderate: error: {exc}", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    print(path)
    return exitcodes.EXIT_OK
