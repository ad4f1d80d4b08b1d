"""`OUT/report.html`: labels, cost, latency, throughput, statuses, costly and flagged rows, eval.

Written at the end of every run into a local folder, and by `moderate report OUT_DIR` (also into a
folder on an object store, read and written through `pipeline.output.reader`). One self-contained file: inline
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

from pipeline.core.storage import StorageError
from pipeline.output.reader import OutputReader, open_for_reading
from pipeline.report.html.data import ReportError, collect
from pipeline.report.html.page import render

REPORT_FILE = "report.html"

__all__ = ["REPORT_FILE", "ReportError", "add_arguments", "main", "recorded_columns", "write_html_report",
           "write_report"]


def write_html_report(out: str | Path | OutputReader, *, text_column: str | None = None,
                      id_column: str | None = None) -> str | Path:
    """Write ``OUT/report.html`` from what the folder holds; returns its path (its URI on an object store).

    ``out``: a local folder or an object-store URI (``s3://bucket/out``), where the page is written.
    `text_column` / `id_column` are the run's input columns, used to show the texts of sampled
    rows; None: the ones the previous report used (they are kept in the page), else ``text``.
    """
    with open_for_reading(out) as folder:
        if text_column is None:
            text_column, id_column = recorded_columns(folder)
        data = collect(folder, text_column=text_column, id_column=id_column)
        where = folder.write_text(REPORT_FILE, render(data))
    return Path(where) if folder.local else where


def write_report(out: str | Path) -> str | Path:
    """Write ``OUT/report.html`` again from what the output folder holds (``moderate report``); returns its path."""
    return write_html_report(out)


def recorded_columns(out: str | Path | OutputReader) -> tuple[str, str | None]:
    """The run's (text, id) columns as the last report recorded them; ("text", None) when unknown."""
    with open_for_reading(out) as folder:
        try:
            raw = folder.read_bytes(REPORT_FILE)
        except (OSError, StorageError):
            return "text", None
    if raw is None:
        return "text", None
    head = raw[:16384].decode("utf-8", errors="replace")[:4096]
    match = re.search(r'<meta name="moderate-input-columns" content="([^"]*)">', head)
    if match is None:
        return "text", None
    with contextlib.suppress(ValueError, TypeError, KeyError):
        columns = orjson.loads(html.unescape(match.group(1)))
        return str(columns["text"]), None if columns["id"] is None else str(columns["id"])
    return "text", None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a run's output directory (a local path or s3://, gs://, "
                                                           "abfs://); report.html is written there")
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
