"""Benchmark "ray": `moderate run --engine ray` on a Ray instance on this machine versus the local engine.

The same rows of the tweets (one policy, binary answers, 1,000-row shards so both Ray actors have
work) go through the local engine with 64 connections, then through Ray with 2 actors x 32
connections, both against one simulator (50 ± 10 ms). Rows/s are taken from the simulator's counter
between the first and the last answer, so Ray's start-up (several seconds) is left out of the rate
and shown in the process's wall time instead; Ray runs once with 1 actor and once with 2. A phase
with a binding RPM, enforced by the simulator too, gives the limiter actor's calls per 1,000 rows
when capacity is scarce (and the 429s, which should be none). A phase whose input holds each
text twice, the copies in other shards, gives the registry of answers' calls per 1,000 rows and
what was paid (each text once). Last, without Ray, a large JSON Lines file split into 16 shards:
the bytes each shard's reader reads, per byte of input (the file is indexed once by the driver).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench import splitting
from bench.clients import ClientRun, StatsSampler, run_moderate
from bench.common import OUT, TWEETS, TWEETS_ROWS, Report, shown_cmd, simulator

LATENCY_MS = 50
JITTER_MS = 10
SHARD_ROWS = 1000
ACTORS = 2
#: the JSON Lines file split into 16 shards (1 GiB with --long)
SPLIT_BYTES, SPLIT_LONG_BYTES = 256 << 20, 1 << 30
RPM = 3000  # 50 requests/s: the limit binds well below what 64 connections at 50 ms could send
_CALLS = re.compile(r"limiter answered ([\d,]+) lease calls for ([\d,]+) requests")
_REGISTRY = re.compile(r"registry of answers answered ([\d,]+) calls for ([\d,]+) rows")


def _config() -> str:
    path = OUT / "ray-bench.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[output]\nshard_rows = {SHARD_ROWS}\n")
    return str(path)


def _limiter_calls(name: str, pattern: re.Pattern = _CALLS) -> int | None:
    log = (OUT / "logs" / name).with_suffix(".stderr")
    match = pattern.search(log.read_text()) if log.exists() else None
    return int(match.group(1).replace(",", "")) if match else None


def _twice(rows: int) -> Path:
    """The first ``rows // 2`` tweets, then the same texts again under other ids (so in other shards)."""
    import orjson
    import polars as pl

    half = pl.read_csv(TWEETS, columns=["tweet"], n_rows=rows // 2)["tweet"].to_list()
    path = OUT / "tweets-twice.jsonl"
    with path.open("wb") as f:
        for i, text in enumerate(half + half):
            f.write(orjson.dumps({"id": f"t{i}", "tweet": text}) + b"\n")
    return path


def run(*, long: bool, results: dict[str, Any]) -> Report:
    rows = TWEETS_ROWS if long else 8000
    limited_rows = 3000 if long else 1500
    report = Report(f"Ray engine on this machine ({ACTORS} actors) versus the local engine "
                    f"({rows:,} rows, {LATENCY_MS} ± {JITTER_MS} ms, {SHARD_ROWS:,}-row shards)")
    config = _config()
    table, commands, figures = [], [], {}
    twice = _twice(limited_rows)
    ray = ["--engine", "ray", "--ray-actors"]
    phases = (
        ("local", rows, ["--limit", str(rows), config], 64, (), None),
        ("ray, 1 actor", rows, ["--limit", str(rows), config, *ray, "1"], 64, (), None),
        ("ray", rows, ["--limit", str(rows), config, *ray, str(ACTORS)], 32, (), None),
        ("ray, RPM binds", limited_rows, ["--limit", str(limited_rows), config, *ray, str(ACTORS), "--rpm", str(RPM)],
         32, ("--rpm", str(RPM)), None),
        ("ray, each text twice", limited_rows, [config, *ray, str(ACTORS)], 32, (), twice),
    )
    for label, n, extra, connections, sim_args, source in phases:
        name = "ray-" + re.sub(r"\W+", "-", label)
        inputs = {"inputs": [source], "text_column": "tweet"} if source is not None else {}
        with simulator("--latency-ms", str(LATENCY_MS), "--jitter-ms", str(JITTER_MS), *sim_args) as sim, \
                StatsSampler(sim, interval=0.25) as samples:
            run_, cmd = run_moderate(sim, name=name, store=None, concurrency=connections, extra=extra, timeout=900,
                                     **inputs)
            paid = sim.stats()["billed"]
        start, end = samples.active_span()
        answered = samples.delta("billed", start, end)
        rate = answered / (end - start) if end > start else 0.0
        calls = _limiter_calls(name)
        per_1000 = calls / n * 1000 if calls is not None and label != "local" else None
        registry = _limiter_calls(name, _REGISTRY)
        registry_per_1000 = registry / n * 1000 if registry is not None else None
        table.append(_row(label, n, connections, run_, rate, per_1000, registry_per_1000, paid))
        commands.append(shown_cmd(cmd))
        figures[label] = {"rows": n, "wall_s": run_.wall_s, "rows_per_s": rate, "limiter_calls": calls,
                          "limiter_calls_per_1000_rows": per_1000, "rate_limited": run_.rate_limited,
                          "registry_calls": registry, "registry_calls_per_1000_rows": registry_per_1000,
                          "paid_requests": paid}
    report.add_table(["engine", "rows", "connections", "process wall s", "rows/s while labelling",
                      "limiter calls / 1,000 rows", "registry calls / 1,000 rows", "paid requests", "429s"], table)
    local, ray = figures["local"]["rows_per_s"], figures["ray"]["rows_per_s"]
    one = figures["ray, 1 actor"]["rows_per_s"]
    report.note(f"Ray with 2 actors / 1 actor: {ray / one:.2f}x; each text twice: "
                f"{figures['ray, each text twice']['paid_requests']:,} requests paid for "
                f"{limited_rows // 2:,} distinct texts.")
    split = splitting.run(size=SPLIT_LONG_BYTES if long else SPLIT_BYTES, shards=16)
    report.add_table(["JSON Lines file", "shards", "driver's index pass: bytes read / input byte",
                      "shard readers: bytes read / input byte", "reading every shard from the file's start"],
                     [[f"{split['bytes'] / 2**20:,.0f} MiB, {split['rows']:,} rows", "16",
                       f"{split['index_read_per_byte']:.2f}", f"{split['shards_read_per_byte']:.3f}",
                       f"{split['unsplit_read_per_byte']:.2f} (computed)"]])
    figures["split_jsonl"] = split
    report.note(f"Ray / local while labelling: {ray / local:.2f}x. Both engines and the simulator share the "
                "machine's 2 cores (and other work on it), so these rates are noisy and say more about "
                "overhead than about scaling: Ray adds its own processes (GCS, raylet, one per actor) on the "
                "same cores. On a cluster each actor brings its own cores and connections.")
    report.note("Commands: " + "; ".join(f"`{c}`" for c in commands))
    report.results.update(figures)
    results["ray"] = report.results
    return report


def _row(label: str, rows: int, connections: int, run_: ClientRun, rate: float, per_1000: float | None,
         registry_per_1000: float | None, paid: int) -> list:
    actors = 1 if "1 actor" in label else ACTORS
    per_actor = f"{actors} x {connections}" if label != "local" else str(connections)
    return [label, f"{rows:,}", per_actor, f"{run_.wall_s:.1f}", f"{rate:,.0f}",
            "-" if per_1000 is None else f"{per_1000:.1f}",
            "-" if registry_per_1000 is None else f"{registry_per_1000:.1f}", f"{paid:,}", str(run_.rate_limited)]
