"""Benchmark 1, client overhead: `moderate run` against the leanest raw aiohttp loop.

Zero-latency simulator in its own process, the 24,783 Davidson tweets, 64 connections, one policy.
Raw loop and `moderate run` (without and with the result store) alternate; the best of each counts.
"""

from __future__ import annotations

from typing import Any

from bench.clients import ClientRun, run_moderate, run_raw
from bench.common import TWEETS_ROWS, Report, shown_cmd, simulator

CONNECTIONS = 64
TARGET_RATIO = 0.9
TARGET_STORE_OVERHEAD = 0.10


def run(*, long: bool, results: dict[str, Any]) -> Report:
    rounds = 3 if long else 2
    runs: dict[str, list[ClientRun]] = {"raw": [], "none": [], "store": []}
    with simulator("--latency-ms", "0", max_seconds=rounds * 180 + 60) as sim:
        for i in range(rounds):
            runs["raw"].append(run_raw(sim, name=f"client-raw-{i}", connections=CONNECTIONS))
            run, cmd_none = run_moderate(sim, name=f"client-nostore-{i}", store="none", concurrency=CONNECTIONS)
            runs["none"].append(run)
            run, _ = run_moderate(sim, name=f"client-store-{i}", store=None, concurrency=CONNECTIONS)
            runs["store"].append(run)
        # the fixed cost of a run (interpreter, imports, tokenizer, reports): one row, default store
        startup, _ = run_moderate(sim, name="client-startup", store=None, concurrency=CONNECTIONS,
                                  extra=["--limit", "1"])
    for r in (r for group in runs.values() for r in group):
        if r.requests != TWEETS_ROWS or r.rate_limited:
            raise RuntimeError(f"{r.name}: the simulator saw {r.requests} requests "
                               f"({r.rate_limited} throttled), expected {TWEETS_ROWS}")
    raw = max(runs["raw"], key=lambda r: r.loop_rps)
    none = max(runs["none"], key=lambda r: r.loop_rps)
    store = max(runs["store"], key=lambda r: r.loop_rps)

    report = Report("1. Client overhead (zero-latency simulator, 24,783 tweets, 64 connections)")
    rows = []
    for label, r in (("raw aiohttp loop", raw), ("moderate --store none", none), ("moderate (default store)", store)):
        rows.append([label, r.loop_rps, r.wall_rps, r.cpu_ms_per_row, r.max_rss_mb,
                     (r.sim_cpu_s or 0.0) / r.loop_s])
    report.add_table([f"client (best of {rounds})", "rows/s (run)", "rows/s (process wall)",
                      "client CPU ms/row", "peak RSS MB", "simulator CPU (cores)"], rows)
    marginal = {k: 1000 * (r.cpu_s - startup.cpu_s) / (r.rows - 1) for k, r in (("none", none), ("store", store))}
    report.add_table(["fixed cost of a run (one row)", "wall s", "CPU s", "peak RSS MB"],
                     [["moderate --limit 1", startup.wall_s, startup.cpu_s, startup.max_rss_mb]])
    report.add_table(["CPU per row without the fixed cost", "ms/row", "x raw loop"], [
        ["raw aiohttp loop (timed loop only)", f"{raw.cpu_ms_per_row:.3f}", "1.00"],
        ["moderate --store none", f"{marginal['none']:.3f}", f"{marginal['none'] / raw.cpu_ms_per_row:.2f}"],
        ["moderate (default store)", f"{marginal['store']:.3f}", f"{marginal['store'] / raw.cpu_ms_per_row:.2f}"],
    ])
    ratio_run = none.loop_rps / raw.loop_rps
    ratio_wall = none.wall_rps / raw.loop_rps
    store_overhead = 1.0 - store.loop_rps / none.loop_rps
    report.add_table(["figure", "value", "target", "met"], [
        ["moderate/raw, rows/s during the run (--store none)", f"{ratio_run:.3f}", f">= {TARGET_RATIO}",
         _yes(ratio_run >= TARGET_RATIO)],
        ["moderate/raw, rows/s over the whole process (start-up, reports)", f"{ratio_wall:.3f}", "-", "-"],
        ["moderate (default store)/raw, rows/s during the run", f"{store.loop_rps / raw.loop_rps:.3f}", "-", "-"],
        ["store overhead (1 - store/no-store rows/s)", f"{store_overhead:.1%}",
         f"< {TARGET_STORE_OVERHEAD:.0%}", _yes(store_overhead < TARGET_STORE_OVERHEAD)],
        ["moderate peak RSS (default store)", f"{store.max_rss_mb:.0f} MB", "-", "-"],
    ])
    report.note("All runs: " + "; ".join(f"{r.name} {r.loop_rps:,.0f} rows/s" for g in runs.values() for r in g)
                + ". `rows/s (run)`: the raw loop's timed section (bodies prebuilt) and moderate's own "
                "summary (reading, planning, calls, shards); `process wall` adds interpreter start-up, "
                "imports, tokenizer load and the final reports. Commands: `" + shown_cmd(cmd_none)
                + "` and the same without `--store none`; raw loop: `python -m bench.raw_loop --url URL "
                f"--connections {CONNECTIONS}`.")
    report.results.update(raw=raw, none=none, store=store, ratio_run=ratio_run, store_overhead=store_overhead,
                          startup=startup, marginal_cpu_ms=marginal)
    results["client"] = report.results
    return report


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"
