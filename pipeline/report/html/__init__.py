"""`OUT/report.html`: labels, cost, latency, throughput, statuses, costly and flagged rows, eval.

Written at the end of every run and by `moderate report OUT_DIR`. One self-contained file: inline
CSS and SVG, no script, nothing fetched, every text from the data escaped and shortened.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import re
import sys
from pathlib import Path

import orjson

from pipeline.output.outdir import atomic_write_text
from pipeline.report.html.data import ReportError, collect
from pipeline.report.html.page import render

REPORT_FILE = "report.html"

__all__ = ["REPORT_FILE", "ReportError", "add_arguments", "main", "recorded_columns", "write_html_report",
           "write_report"]


def write_html_report(out: str | Path, *, text_column: str | None = None, id_column: str | None = None) -> Path:
    """Write ``OUT/report.html`` from what the directory holds; returns its path.

    `text_column` / `id_column` are the run's input columns, used to show the texts of sampled
    rows; None: the ones the previous report used (they are kept in the page), else ``text``.
    """
    out = Path(out)
    path = out / REPORT_FILE
    if text_column is None:
        text_column, id_column = recorded_columns(out)
    data = collect(out, text_column=text_column, id_column=id_column)
    atomic_write_text(path, render(data))
    return path


def write_report(out: str | Path) -> Path:
    """Write ``OUT/report.html`` again from what the output folder holds (``moderate report``); returns its path."""
    return write_html_report(out)


def recorded_columns(out: str | Path) -> tuple[str, str | None]:
    """The run's (text, id) columns as the last report recorded them; ("text", None) when unknown."""
    path = Path(out) / REPORT_FILE
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return "text", None
    match = re.search(r'<meta name="moderate-input-columns" content="([^"]*)">', head)
    if match is None:
        return "text", None
    with contextlib.suppress(ValueError, TypeError, KeyError):
        columns = orjson.loads(html.unescape(match.group(1)))
        return str(columns["text"]), None if columns["id"] is None else str(columns["id"])
    return "text", None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a run's output directory")
    parser.add_argument("--text-column", metavar="C",
                        help="the run's text column, to show texts beside sampled rows (default: as the last "
                             "report, else text)")
    parser.add_argument("--id-column", metavar="C", help="the run's id column, if it named one")


def main(args: argparse.Namespace) -> int:
    from pipeline.core import exitcodes

    try:
        path = write_html_report(args.out_dir, text_column=args.text_column, id_column=args.id_column)
    except ReportError as exc:
        print(f"moderate: error: {exc}", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    except OSError as exc:  # a read-only or full folder
        print(f"moderate: error: {exc.filename or args.out_dir}: cannot write ({exc.strerror or exc})", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    print(path)
    return exitcodes.EXIT_OK
