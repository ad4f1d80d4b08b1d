"""Benchmark 5, hidden RPM: the simulator throttles at 3,000 RPM without advertising it.

`moderate run` has no configured limit and must find the rate from 429s alone. Reported: the rate
the simulator accepted over the second half of the run, and the 429s before and after that point.
Two variants: 429 with `Retry-After: N` seconds, and 429 with no hint at all.
"""

from __future__ import annotations

from typing import Any

from bench.clients import StatsSampler, run_moderate
from bench.common import TWEETS_ROWS, Report, shown_cmd, simulator

HIDDEN_RPM = 3000
LATENCY_MS = 100
JITTER_MS = 20
CONNECTIONS = 64


def run(*, long: bool, results: dict[str, Any]) -> Report:
    seconds = 90.0 if long else 30.0
    rows = min(TWEETS_ROWS, round(HIDDEN_RPM / 60 * seconds))
    report = Report(f"5. Hidden rate limit ({HIDDEN_RPM:,} RPM not advertised, no client limit, {rows:,} rows "
                    f"≈ {seconds:g} s at the limit, {LATENCY_MS} ± {JITTER_MS} ms, {CONNECTIONS} connections)")
    table, figures, cmd = [], {}, []
    for style in ("seconds", "none"):
        sim_args = ("--latency-ms", str(LATENCY_MS), "--jitter-ms", str(JITTER_MS), "--rpm", str(HIDDEN_RPM),
                    "--retry-after", style)
        with simulator(*sim_args, max_seconds=seconds * 4 + 120) as sim, StatsSampler(sim, interval=0.25) as samples:
            mod, cmd = run_moderate(sim, name=f"adaptive-{style}", store=None, concurrency=CONNECTIONS,
                                    timeout=seconds * 3 + 60, stop_after=seconds * 2, extra=["--limit", str(rows)])
        start, end = samples.active_span()
        half = start + (end - start) / 2
        late_rpm = 60 * samples.rate("billed", half, end)
        early_429 = samples.delta("rate_limited", 0.0, half)
        late_429 = samples.delta("rate_limited", half, samples.points[-1][0])
        overall = 60 * mod.rows / mod.loop_s
        stopped = " (stopped at 2x the planned time)" if mod.stopped else ""
        table.append([f"Retry-After: {style}", f"{mod.rows:,} of {rows:,}{stopped}", f"{mod.loop_s:.1f}",
                      f"{overall:,.0f} ({overall / HIDDEN_RPM:.3f})",
                      f"{late_rpm:,.0f} ({late_rpm / HIDDEN_RPM:.3f})", early_429, late_429, mod.rate_limited])
        figures[style] = {"late_ratio": late_rpm / HIDDEN_RPM, "late_429": late_429, "total_429": mod.rate_limited}
    report.add_table(["429 style", "answered", "run s", "RPM whole run (ratio)", "RPM second half (ratio)",
                      "429s first half", "429s second half", "429s total"], table)
    report.note(f"Command: `{shown_cmd(cmd)}`, simulator `moderate simulate --port 0 --rpm {HIDDEN_RPM} "
                f"--retry-after seconds|none --latency-ms {LATENCY_MS} --jitter-ms {JITTER_MS}`. The rate "
                "is what the simulator accepted (billed answers); halves split the time it was receiving.")
    report.results.update(figures)
    results["adaptive"] = figures
    return report
