"""BENCHMARKS.md as ``python -m bench`` keeps it: one history table (a row per run, headline
figures) and the latest full result of each benchmark, each replaced by its newest run.

Hand-written text outside those two parts (the preamble, ``## Notes``) is left as it is.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import BENCHMARKS_MD, Report

HISTORY = "## History"
LATEST = "## Latest results"
HISTORY_COLUMNS = ["date (UTC)", "commit", "run", "client overhead", "store overhead", "peak RSS MB",
                   "latency / ideal", "limiter share (429s)", "hidden-limit share"]

_PREAMBLE = f"""\
# Benchmarks

`make bench` (= `.venv/bin/python -m bench`) runs the short suite, `make bench-long` the long
versions, `--only NAME` one benchmark (see `python -m bench -h`). Each run adds a row to the history
table and replaces the sections of the benchmarks it ran under "Latest results". Every figure is a
ratio against a reference measured in the same run on the same machine, against the built-in
simulator started as a separate process (`moderate simulate`).

{HISTORY}

| {" | ".join(HISTORY_COLUMNS)} |
|{"|".join("---" for _ in HISTORY_COLUMNS)}|

{LATEST}
"""


def record(reports: Sequence[Report], results: dict[str, Any], *, command: str, started: dt.datetime,
           info: dict[str, str], path: Path = BENCHMARKS_MD) -> None:
    """Add this run's history row and put each finished benchmark's section in place of its last one."""
    text = path.read_text(encoding="utf-8") if path.exists() else _PREAMBLE
    when = f"{started:%Y-%m-%d %H:%M}"
    text = _add_history_row(text, [when, info["commit"], command.removeprefix("python -m "), *headline(results)])
    run_line = (f"- run: {when} UTC, commit {info['commit']}; {info['cores']} cores ({info['cpu']}), "
                f"{info['ram']} RAM, Python {info['python']}; `{command}`")
    for report in reports:
        if report.title.endswith("FAILED"):
            continue
        blocks = [f"### {report.title}", run_line, *(b[1] for b in report.blocks)]
        text = _put_section(text, report.title.split(" (")[0], "\n\n".join(blocks) + "\n")
    path.write_text(text, encoding="utf-8")


def headline(results: dict[str, Any]) -> list[str]:
    """The history row's figures ("-" for a benchmark that did not run)."""
    client, memory = results.get("client", {}), results.get("memory", {})
    latency, limiter, hidden = results.get("latency", {}), results.get("limiter", {}), results.get("adaptive", {})
    peaks = [v for k, v in memory.items() if k.startswith("default store@")]
    cells = [
        f"{client['ratio_run']:.3f}" if "ratio_run" in client else "-",
        f"{client['store_overhead']:.1%}" if "store_overhead" in client else "-",
        f"{max(peaks):.0f}" if peaks else "-",
        f"{latency['ratio']:.3f}" if "ratio" in latency else "-",
        (f"{min(f['steady'] for f in limiter.values()):.3f} ({sum(f['rate_limited'] for f in limiter.values())})"
         if limiter else "-"),
        f"{hidden['seconds']['late_ratio']:.3f}" if "seconds" in hidden else "-",
    ]
    return cells


def _add_history_row(text: str, cells: list[str]) -> str:
    start = text.index(HISTORY)
    end = _next_heading(text, start + len(HISTORY), level=2)
    lines = text[start:end].rstrip("\n").split("\n")
    last = max(i for i, line in enumerate(lines) if line.startswith("|"))
    lines.insert(last + 1, "| " + " | ".join(cells) + " |")
    return text[:start] + "\n".join(lines) + "\n\n" + text[end:]


def _put_section(text: str, key: str, section: str) -> str:
    """Replace the ``### key ...`` section under "Latest results", or add it at the end of that part."""
    latest = text.index(LATEST)
    part_end = _next_heading(text, latest + len(LATEST), level=2)
    match = re.compile(r"^### " + re.escape(key) + r"\b.*$", re.M).search(text, latest, part_end)
    if match is None:
        head = text[:part_end].rstrip("\n") + "\n\n"
        return head + section + ("\n" + text[part_end:] if part_end < len(text) else "")
    end = min(_next_heading(text, match.end(), level=3), part_end)
    tail = text[end:]
    return text[: match.start()] + section + ("\n" + tail if tail else "")


def _next_heading(text: str, start: int, *, level: int) -> int:
    """Where the next heading of ``level`` or higher starts after ``start`` (the text's end if none)."""
    match = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, start)
    return match.start() if match else len(text)
