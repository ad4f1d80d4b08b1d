"""Benchmark 12, stragglers: 2 % of requests hang past a 10 s timeout, at 64 connections.

A request that hangs holds its connection until its timeout. With a fixed pool, 2 % of requests
hanging 10 s leave a fraction of the 64 connections answering. A request in flight past 5x the
recent answered latency (at least 0.5 s) stops counting against the pool (``limits.stragglers``),
while it keeps its connection until it answers or times out (a timed-out call may still be billed).

Three runs of the same job (simulator answering in 20 ± 10 ms, one policy, no store): clean; 2 %
hanging with stragglers released (the default); 2 % hanging with a fixed pool (``stragglers = 0``).
Goodput until 90 % of the rows = 90 % of the rows over the seconds from the first answer until
the simulator had billed that many; the hung requests' retries make the tail, shown apart.
"""

from __future__ import annotations

from typing import Any

from bench.clients import StatsSampler, run_moderate
from bench.common import OUT, TWEETS_ROWS, Report, shown_cmd, simulator

LATENCY_MS = 20
JITTER_MS = 10
TIMEOUT_S = 10
HANG = ("--hang", "0.02", "--hang-seconds", "12")
SHARE = 0.9
TARGET = 0.5
FIXED_POOL = OUT / "stragglers-fixed-pool.toml"


def run(*, long: bool, results: dict[str, Any]) -> Report:
    rows = TWEETS_ROWS if long else 12_000
    FIXED_POOL.parent.mkdir(parents=True, exist_ok=True)
    FIXED_POOL.write_text("[limits]\nstragglers = 0\n")
    cases = (("clean", (), ()), ("2 % hang, stragglers released (default)", HANG, ()),
             ("2 % hang, fixed pool (stragglers = 0)", HANG, (str(FIXED_POOL),)))
    table, figures, commands, goodput = [], {}, [], {}
    for name, sim_flags, client in cases:
        key = "stragglers-" + "".join(c if c.isalnum() else "-" for c in name)[:40]
        with simulator("--latency-ms", str(LATENCY_MS), "--jitter-ms", str(JITTER_MS), "--seed", "12", *sim_flags,
                       max_seconds=600) as sim, StatsSampler(sim, interval=0.1) as samples:
            mod, cmd = run_moderate(sim, name=key, store="none", timeout=400, ok_codes=(0, 1),
                                    extra=["--limit", str(rows), "--request-timeout", str(TIMEOUT_S), *client])
        commands.append(cmd)
        start, _ = samples.active_span()
        reached = samples.reached("billed", samples.points[0][1]["billed"] + SHARE * rows)
        seconds = (reached - start) if reached is not None else None
        goodput[name] = SHARE * rows / seconds if seconds else 0.0
        ratio = goodput[name] / goodput["clean"] if goodput.get("clean") else None
        table.append([name, f"{rows:,}", f"{seconds:.1f}" if seconds else "-", f"{goodput[name]:,.0f}",
                      "-" if ratio is None else f"{ratio:.2f}", f"{mod.loop_s:.1f}", f"{mod.requests:,}"])
        figures[key] = {"rows": rows, "seconds_to_90": seconds, "goodput_to_90": goodput[name], "vs_clean": ratio,
                        "run_seconds": mod.loop_s, "requests": mod.requests}
    report = Report(f"12. Stragglers (2 % of requests hang past a {TIMEOUT_S} s timeout; {LATENCY_MS} ± {JITTER_MS} "
                    "ms, 64 connections, no store)")
    report.add_table(["server behaviour", "rows", "s to 90 % of rows", "goodput to 90 % (rows/s)", "x clean",
                      "whole run s", "requests"], table)
    met = goodput[cases[1][0]] / goodput["clean"] if goodput["clean"] else None
    report.note(f"Target: goodput until 90 % of the rows >= {TARGET}x the clean run's with stragglers released: "
                f"{'met' if met is not None and met >= TARGET else 'NOT met'}. The whole run also waits for the "
                f"last hung requests' {TIMEOUT_S} s timeout and their retry. Commands: "
                + "; ".join(f"`{shown_cmd(c)}`" for c in commands) + f" (simulator flags: `{' '.join(HANG)}`).")
    report.results.update(figures)
    results["stragglers"] = figures
    return report
