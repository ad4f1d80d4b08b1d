"""Benchmark: batch files round trip at 10,000 rows (100,000 with --long).

rows -> ``moderate batch prepare`` -> ``moderate simulate --batch`` (the simulator answers the file
offline, as a host's batch API would) -> ``moderate batch ingest``, compared with ``moderate run``
of the same job against the simulator: the labels must be identical, the token totals equal and
the cost the online cost at the table's batch discount.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from bench.clients import run_moderate
from bench.common import (
    MODEL,
    OUT,
    OUTPUT_FORMAT,
    POLICY,
    PYTHON,
    Report,
    fresh_dir,
    run_measured,
    shown_cmd,
    simulator,
)
from bench.memory import make_input

COMPARED = ["id", "policy", "row_number", "status", "violation", "prompt_tokens", "completion_tokens", "fingerprint"]


def run(*, long: bool, results: dict[str, Any]) -> Report:
    rows = 100_000 if long else 10_000
    data = make_input(rows)
    work = fresh_dir("batch")
    out, requests, answers = work / "out", work / "requests.jsonl", work / "results.jsonl"
    job = ["--input", str(data), "--text-column", "text", "--policy", POLICY, "--output-format", OUTPUT_FORMAT,
           "--model", MODEL, "--out", str(out)]
    steps = []
    with simulator("--latency-ms", "0", max_seconds=3600) as sim:
        prepare = [PYTHON, "-m", "pipeline", "batch", "prepare", *job, "--output", str(requests)]
        m = run_measured(prepare, timeout=1800, log=work / "prepare")
        if m.returncode != 0:
            raise RuntimeError(f"batch prepare failed: {m.stderr[-2000:]}")
        steps.append(("batch prepare", m.wall_s, m.max_rss_mb, shown_cmd(prepare)))
        simulate = [PYTHON, "-m", "pipeline", "simulate", "--batch", str(requests), "-o", str(answers)]
        m = run_measured(simulate, timeout=1800, log=work / "simulate")
        lines = len(requests.read_bytes().splitlines())
        if m.returncode != 0 or len(answers.read_bytes().splitlines()) != lines:
            raise RuntimeError(f"simulate --batch failed: {m.stderr[-2000:]}")
        steps.append(("simulate --batch (the host's part)", m.wall_s, m.max_rss_mb, shown_cmd(simulate)))
        ingest = [PYTHON, "-m", "pipeline", "batch", "ingest", str(out), str(answers)]
        m = run_measured(ingest, timeout=1800, log=work / "ingest")
        if m.returncode != 0:
            raise RuntimeError(f"batch ingest failed: {m.stderr[-2000:]}")
        steps.append(("batch ingest", m.wall_s, m.max_rss_mb, shown_cmd(ingest)))
        online, cmd = run_moderate(sim, name="batch-online", store=None, inputs=[data], text_column="text",
                                   timeout=1800)
        steps.append(("run (online, for comparison)", online.wall_s, online.max_rss_mb, shown_cmd(cmd)))
    batch_labels = _labels(out)
    online_out = OUT / "batch-online"
    online_labels = _labels(online_out)
    same_labels = batch_labels.select(COMPARED).equals(online_labels.select(COMPARED))
    batch_report = json.loads((out / "cost_report.json").read_text())
    online_report = json.loads((online_out / "cost_report.json").read_text())
    tokens = ("prompt_tokens", "completion_tokens", "requests")
    same_tokens = all(batch_report[k] == online_report[k] for k in tokens)
    ratio = batch_report["cost_usd"] / online_report["cost_usd"] if online_report["cost_usd"] else float("nan")
    if not (same_labels and same_tokens):
        raise RuntimeError(f"batch and online differ: labels identical {same_labels}, tokens equal {same_tokens}")
    report = Report(f"batch files: {rows:,} rows, prepare -> simulated batch -> ingest vs online run")
    report.add_table(["step", "wall s", "peak RSS MB"], [(name, f"{wall:.1f}", f"{rss:.0f}")
                                                        for name, wall, rss, _ in steps])
    report.add_table(["check", "result"], [
        ("request lines (unique text x policy)", f"{lines:,}"),
        ("labels identical to the online run", "yes" if same_labels else "NO"),
        ("prompt/completion tokens and requests equal", "yes" if same_tokens else "NO"),
        ("batch cost / online cost", f"{ratio:.3f} (table discount {batch_report['batch']['discount']:.0%})"),
    ])
    for name, _, _, shown in steps:
        report.note(f"{name}: `{shown}`")
    results["batch"] = {"rows": rows, "lines": lines, "cost_ratio": ratio}
    return report


def _labels(out: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / "labels").glob("part-*.parquet"))).sort("row_number", "policy")
