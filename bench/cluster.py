"""Benchmark "ray": `moderate run --engine ray` on a Ray instance on this machine versus the local engine.

The same rows of the tweets (one policy, binary answers, 1,000-row shards so both Ray actors have
work) go through the local engine with 64 connections, then through Ray with 2 actors x 32
connections, both against one simulator (50 ± 10 ms). Rows/s are taken from the simulator's counter
between the first and the last answer, so Ray's start-up (several seconds) is left out of the rate
and shown in the process's wall time instead. Then a phase with a binding RPM, enforced by the
simulator too, gives the limiter actor's calls per 1,000 rows when capacity is scarce (and the
429s, which should be none).
"""

from __future__ import annotations

import re
from typing import Any

from bench.clients import ClientRun, StatsSampler, run_moderate
from bench.common import OUT, TWEETS_ROWS, Report, shown_cmd, simulator

LATENCY_MS = 50
JITTER_MS = 10
SHARD_ROWS = 1000
ACTORS = 2
RPM = 3000  # 50 requests/s: the limit binds well below what 64 connections at 50 ms could send
_CALLS = re.compile(r"limiter answered ([\d,]+) lease calls for ([\d,]+) requests")


def _config() -> str:
    path = OUT / "ray-bench.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[output]\nshard_rows = {SHARD_ROWS}\n")
    return str(path)


def _limiter_calls(name: str) -> int | None:
    log = (OUT / "logs" / name).with_suffix(".stderr")
    match = _CALLS.search(log.read_text()) if log.exists() else None
    return int(match.group(1).replace(",", "")) if match else None


def run(*, long: bool, results: dict[str, Any]) -> Report:
    rows = TWEETS_ROWS if long else 8000
    limited_rows = 3000 if long else 1500
    report = Report(f"Ray engine on this machine ({ACTORS} actors) versus the local engine "
                    f"({rows:,} rows, {LATENCY_MS} ± {JITTER_MS} ms, {SHARD_ROWS:,}-row shards)")
    config = _config()
    table, commands, figures = [], [], {}
    phases = (
        ("local", rows, ["--limit", str(rows), config], 64, ()),
        ("ray", rows, ["--limit", str(rows), config, "--engine", "ray", "--ray-actors", str(ACTORS)], 32, ()),
        ("ray, RPM binds", limited_rows, ["--limit", str(limited_rows), config, "--engine", "ray", "--ray-actors",
                                          str(ACTORS), "--rpm", str(RPM)], 32, ("--rpm", str(RPM))),
    )
    for label, n, extra, connections, sim_args in phases:
        name = "ray-" + re.sub(r"\W+", "-", label)
        with simulator("--latency-ms", str(LATENCY_MS), "--jitter-ms", str(JITTER_MS), *sim_args) as sim, \
                StatsSampler(sim, interval=0.25) as samples:
            run_, cmd = run_moderate(sim, name=name, store=None, concurrency=connections, extra=extra, timeout=900)
        start, end = samples.active_span()
        answered = samples.delta("billed", start, end)
        rate = answered / (end - start) if end > start else 0.0
        calls = _limiter_calls(name)
        per_1000 = calls / n * 1000 if calls is not None and label != "local" else None
        table.append(_row(label, n, connections, run_, rate, per_1000))
        commands.append(shown_cmd(cmd))
        figures[label] = {"rows": n, "wall_s": run_.wall_s, "rows_per_s": rate, "limiter_calls": calls,
                          "limiter_calls_per_1000_rows": per_1000, "rate_limited": run_.rate_limited}
    report.add_table(["engine", "rows", "connections", "process wall s", "rows/s while labelling",
                      "limiter calls / 1,000 rows", "429s"], table)
    local, ray = figures["local"]["rows_per_s"], figures["ray"]["rows_per_s"]
    report.note(f"Ray / local while labelling: {ray / local:.2f}x. Both engines and the simulator share the "
                "machine's 2 cores (and other work on it), so these rates are noisy and say more about "
                "overhead than about scaling: Ray adds its own processes (GCS, raylet, one per actor) on the "
                "same cores. On a cluster each actor brings its own cores and connections.")
    report.note("Commands: " + "; ".join(f"`{c}`" for c in commands))
    report.results.update(figures)
    results["ray"] = report.results
    return report


def _row(label: str, rows: int, connections: int, run_: ClientRun, rate: float, per_1000: float | None) -> list:
    per_actor = f"{ACTORS} x {connections}" if label != "local" else str(connections)
    return [label, f"{rows:,}", per_actor, f"{run_.wall_s:.1f}", f"{rate:,.0f}",
            "-" if per_1000 is None else f"{per_1000:.1f}", str(run_.rate_limited)]
