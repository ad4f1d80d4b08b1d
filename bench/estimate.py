"""Benchmark 7, estimate: rows/s and peak RSS of `moderate estimate` (exact o200k counts, no network).

Inputs are the tweets repeated with a suffix per copy (every row a new text, so every row is
tokenised and its digest kept: the worst case for speed and memory), 10 k and 1 M rows
(10 M with --long), one Parquet file each under bench/out/.
"""

from __future__ import annotations

import json
from typing import Any

from bench.common import PYTHON, Report, run_measured, shown_cmd
from bench.memory import make_input

TARGET_ROWS_PER_S = 100_000
TARGET_MB = 300.0


def run(*, long: bool, results: dict[str, Any]) -> Report:
    sizes = [10_000, 1_000_000] + ([10_000_000] if long else [])
    table, cmd = [], []
    measured: dict[int, dict[str, float]] = {}
    for n in sizes:
        path = make_input(n)
        cmd = [PYTHON, "-m", "pipeline", "estimate", "--input", str(path), "--policy", "spam", "--json"]
        startup = run_measured([PYTHON, "-c", "import pipeline.cli.estimate"], timeout=120)
        m = run_measured(cmd, timeout=3600)
        if m.returncode != 0:
            raise RuntimeError(f"estimate failed on {n} rows: {m.stderr.strip()[-300:]}")
        result = json.loads(m.stdout)
        if result["rows"] != n or result["requests"] != n:
            raise RuntimeError(f"estimate counted {result['rows']} rows, {result['requests']} requests for {n}")
        counting = max(m.wall_s - startup.wall_s, 1e-9)
        measured[n] = {"rows_per_s": n / counting, "rss_mb": m.max_rss_mb,
                       "digest_mb": result["digest_set_bytes"] / 1e6}
        table.append([f"{n:,}", f"{m.wall_s:.1f}", f"{n / counting:,.0f}", f"{m.max_rss_mb:.0f}",
                      f"{result['digest_set_bytes'] / 1e6:.1f}", f"{result['prompt_tokens']:,}"])
    report = Report("7. Estimate (`moderate estimate`: exact o200k + Harmony counts, all rows distinct)")
    report.add_table(["rows", "wall s", "rows/s (wall minus start-up)", "peak RSS MB", "digest set MB",
                      "prompt tokens"], table)
    big = measured[sizes[-1]]
    ok = big["rows_per_s"] >= TARGET_ROWS_PER_S and big["rss_mb"] <= TARGET_MB
    report.note(f"Largest input: {big['rows_per_s']:,.0f} rows/s, {big['rss_mb']:.0f} MB peak; target "
                f">= {TARGET_ROWS_PER_S:,} rows/s and <= {TARGET_MB:.0f} MB: {'yes' if ok else '**no**'}. "
                f"Command: `{shown_cmd(cmd)}`; start-up (Python + imports) measured apart and subtracted.")
    report.results.update({str(k): v for k, v in measured.items()})
    results["estimate"] = report.results
    return report
