"""The two clients of the throughput benchmarks, each run as its own measured process against one
simulator: the raw aiohttp loop and `moderate run`; and a sampler of the simulator's counters.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    MODEL,
    OUT,
    OUTPUT_FORMAT,
    POLICY,
    PYTHON,
    TWEETS,
    SimulatorProcess,
    fresh_dir,
    run_measured,
)
from pipeline.core.exitcodes import EXIT_INTERRUPTED


def moderate_cmd(*, base_url: str, out: Path, inputs: Sequence[Path | str] = (TWEETS,),
                 text_column: str = "tweet", concurrency: int = 64, store: str | None = "none",
                 extra: Sequence[str] = ()) -> list[str]:
    """``moderate run`` against a simulator, one policy, binary answers, no progress bar."""
    cmd = [PYTHON, "-m", "pipeline", "run"]
    for path in inputs:
        cmd += ["--input", str(path)]
    cmd += ["--text-column", text_column, "--policy", POLICY, "--output-format", OUTPUT_FORMAT,
            "--base-url", base_url, "--model", MODEL, "--concurrency", str(concurrency),
            "--out", str(out), "--no-progress"]
    if store is not None:
        cmd += ["--store", store]
    return [*cmd, *extra]


_SUMMARY = re.compile(r"([\d,]+) labels .* in ([\d.]+) s \(([\d,]+) labels/s\)")


def parse_summary(stderr: str) -> tuple[int, float, float]:
    """(labels, elapsed s, labels/s) from moderate's summary line; raise if it is missing."""
    for line in reversed(stderr.splitlines()):
        match = _SUMMARY.search(line)
        if match:
            labels = int(match.group(1).replace(",", ""))
            return labels, float(match.group(2)), float(match.group(3).replace(",", ""))
    raise RuntimeError(f"no summary line from moderate:\n{stderr[-2000:]}")



@dataclass(slots=True)
class ClientRun:
    """One client run against a simulator: what the client did and what the simulator saw."""

    name: str
    rows: int
    wall_s: float  # the whole process, start-up and reports included
    loop_s: float  # the client's own timed section (raw loop) or its run (moderate's summary)
    cpu_s: float
    max_rss_mb: float
    requests: int  # chat-completion requests the simulator received
    rate_limited: int
    sim_cpu_s: float | None
    stopped: bool = False  # interrupted at a deadline before it finished

    @property
    def wall_rps(self) -> float:
        return self.rows / self.wall_s

    @property
    def loop_rps(self) -> float:
        return self.rows / self.loop_s

    @property
    def cpu_ms_per_row(self) -> float:
        return 1000.0 * self.cpu_s / self.rows


def _sim_cpu(sim: SimulatorProcess) -> float:
    return sim.rusage_cpu_s() or 0.0


def run_raw(sim: SimulatorProcess, *, name: str, connections: int, rows: int | None = None,
            timeout: float = 600.0) -> ClientRun:
    cmd = [PYTHON, "-m", "bench.raw_loop", "--url", sim.base_url, "--connections", str(connections)]
    if rows is not None:
        cmd += ["--rows", str(rows)]
    before, sim_cpu = sim.stats(), _sim_cpu(sim)
    m = run_measured(cmd, timeout=timeout, log=OUT / "logs" / name)
    after = sim.stats()
    if m.returncode != 0:
        raise RuntimeError(f"raw loop failed ({m.returncode}): {m.stderr[-2000:]}")
    data = json.loads(m.stdout.strip().splitlines()[-1])
    if data["ok"] != data["rows"]:
        raise RuntimeError(f"raw loop: only {data['ok']} of {data['rows']} answers were HTTP 200")
    # CPU of the timed loop only: reading the CSV and building the bodies are not part of it
    return ClientRun(name, data["rows"], m.wall_s, data["elapsed_s"], data["cpu_s"], m.max_rss_mb,
                     after["requests"] - before["requests"], after["rate_limited"] - before["rate_limited"],
                     _sim_cpu(sim) - sim_cpu)


def run_moderate(sim: SimulatorProcess, *, name: str, store: str | None = "none", concurrency: int = 64,
                 inputs: Sequence[Path | str] = (TWEETS,), text_column: str = "tweet",
                 extra: Sequence[str] = (), timeout: float = 900.0,
                 stop_after: float | None = None, ok_codes: Sequence[int] = (0,)) -> tuple[ClientRun, list[str]]:
    """One ``moderate run`` into a fresh ``bench/out/NAME``; returns the run and the command.

    ``stop_after`` seconds: interrupt it then (SIGINT) and count the labels it finished;
    ``ClientRun.stopped`` says whether that happened.
    """
    out = fresh_dir(name)
    cmd = moderate_cmd(base_url=sim.base_url, out=out, inputs=inputs, text_column=text_column,
                       concurrency=concurrency, store=store, extra=extra)
    before, sim_cpu = sim.stats(), _sim_cpu(sim)
    m = run_measured(cmd, timeout=timeout, log=OUT / "logs" / name, interrupt_after=stop_after)
    after = sim.stats()
    stopped = m.returncode == EXIT_INTERRUPTED
    if m.returncode not in ok_codes and not (stopped and stop_after is not None):
        raise RuntimeError(f"moderate run failed ({m.returncode}): {m.stderr[-2000:]}")
    labels, elapsed, rate = parse_summary(m.stderr)
    loop_s = labels / rate if rate >= 100 else elapsed  # labels/s has more digits than elapsed
    if stopped:  # labels counts the rows marked "interrupted" too: count only the answered ones
        labels = after["billed"] - before["billed"]
    run = ClientRun(name, labels, m.wall_s, loop_s, m.cpu_s, m.max_rss_mb, after["requests"] - before["requests"],
                    after["rate_limited"] - before["rate_limited"], _sim_cpu(sim) - sim_cpu, stopped)
    return run, cmd


class StatsSampler:
    """Reads the simulator's counters every ``interval`` seconds in a thread, while a client runs.

    >>> with StatsSampler(sim) as samples:  # doctest: +SKIP
    ...     run_moderate(sim, name="x")
    >>> samples.points  # doctest: +SKIP
    [(0.0, {...}), (0.5, {...}), ...]
    """

    def __init__(self, sim: SimulatorProcess, *, interval: float = 0.5) -> None:
        self.sim = sim
        self.interval = interval
        self.points: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stats-sampler", daemon=True)
        self._start = 0.0

    def __enter__(self) -> StatsSampler:
        self._start = time.perf_counter()
        self.points.append((0.0, self.sim.stats()))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            self.points.append((time.perf_counter() - self._start, self.sim.stats()))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self.points.append((time.perf_counter() - self._start, self.sim.stats()))

    def active_span(self, key: str = "billed") -> tuple[float, float]:
        """First and last sample time at which ``key`` changed (the span the client was sending)."""
        changes = [t for (t, s), (_, p) in zip(self.points[1:], self.points, strict=False) if s[key] != p[key]]
        if not changes:
            return 0.0, 0.0
        first = max(t for t, _ in self.points if t < changes[0])
        return first, changes[-1]

    def reached(self, key: str, value: float) -> float | None:
        """When counter ``key`` first reached ``value`` (linear between samples); None if it never did."""
        for (t0, s0), (t1, s1) in zip(self.points, self.points[1:], strict=False):
            a, b = _counter(s0, key), _counter(s1, key)
            if b >= value:
                return t0 if b == a or a >= value else t0 + (t1 - t0) * (value - a) / (b - a)
        return None

    def rate(self, key: str, start: float, end: float) -> float:
        """Per second growth of counter ``key`` between the samples nearest ``start`` and ``end``."""
        a = min(self.points, key=lambda p: abs(p[0] - start))
        b = min(self.points, key=lambda p: abs(p[0] - end))
        return (_counter(b[1], key) - _counter(a[1], key)) / (b[0] - a[0]) if b[0] > a[0] else 0.0

    def delta(self, key: str, start: float, end: float) -> int:
        """Growth of counter ``key`` between the samples nearest ``start`` and ``end``."""
        a = min(self.points, key=lambda p: abs(p[0] - start))
        b = min(self.points, key=lambda p: abs(p[0] - end))
        return _counter(b[1], key) - _counter(a[1], key)


def _counter(stats: dict[str, Any], key: str) -> int:
    if key == "tokens":
        return stats["prompt_tokens"] + stats["completion_tokens"]
    return stats[key]
