"""Benchmark 3, limiter accuracy: `moderate run --rpm R --tpm T` against a simulator enforcing R and T.

Phases: the request limit binds, the token limit binds, and the request limit again with the
adaptive rate switched off (`[limits] adaptive = false`), which isolates the configured buckets from
the reaction to a 429. Achieved rates come from the simulator's counters (what it accepted) over the
run's elapsed time, and over the steady middle of the run (first and last 10 % left out); every 429
counts against the client. A run still going at 1.5x its planned time is interrupted (SIGINT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.clients import StatsSampler, run_moderate
from bench.common import OUT, TWEETS_ROWS, Report, shown_cmd, simulator

LATENCY_MS = 100
JITTER_MS = 20
TOKENS_PER_ROW = 558  # simulator's prompt + completion tokens per tweet under the spam policy (benchmark 1)
TARGET = 0.97


@dataclass(slots=True)
class Phase:
    name: str
    key: str
    rpm: float
    tpm: float
    binding: str  # "rpm" or "tpm"
    adaptive: bool = True

    def rows(self, seconds: float) -> int:
        per_s = self.rpm / 60 if self.binding == "rpm" else self.tpm / 60 / TOKENS_PER_ROW
        return min(TWEETS_ROWS, round(per_s * seconds))


PHASES = (
    Phase("request limit binds", "rpm", 1200, 2_000_000, "rpm"),
    Phase("token limit binds", "tpm", 6000, 300_000, "tpm"),
    Phase("request limit binds, adaptive off", "rpm-fixed", 1200, 2_000_000, "rpm", adaptive=False),
    Phase("small token plan (60 k TPM)", "tpm-60k", 100_000, 60_000, "tpm"),
    Phase("large token plan (1 M TPM)", "tpm-1m", 100_000, 1_000_000, "tpm"),
)


def run(*, long: bool, results: dict[str, Any]) -> Report:
    seconds = 90.0 if long else 30.0
    report = Report(f"3. Limiter accuracy (~{seconds:g} s per phase, simulator enforcing the same limits, "
                    f"{LATENCY_MS} ± {JITTER_MS} ms, 64 connections)")
    rows, figures, commands = [], {}, []
    for phase in PHASES:
        limits = ["--rpm", f"{phase.rpm:.0f}", "--tpm", f"{phase.tpm:.0f}"]
        n = phase.rows(seconds)
        extra = ["--limit", str(n), *limits]
        if not phase.adaptive:
            config = OUT / "limiter-fixed.toml"
            config.write_text("[limits]\nadaptive = false\n")
            extra.append(str(config))
        with simulator("--latency-ms", str(LATENCY_MS), "--jitter-ms", str(JITTER_MS), *limits,
                       max_seconds=seconds * 3 + 120) as sim, StatsSampler(sim) as samples:
            mod, cmd = run_moderate(sim, name=f"limiter-{phase.key}", store=None, timeout=seconds * 2 + 60,
                                    stop_after=seconds * 1.5, extra=extra)
        commands.append(cmd)
        first, last = samples.points[0][1], samples.points[-1][1]
        accepted = last["billed"] - first["billed"]
        tokens = _tokens(last) - _tokens(first)
        start, end = samples.active_span()
        trim = 0.1 * (end - start)
        steady_rpm = 60 * samples.rate("billed", start + trim, end - trim)
        steady_tpm = 60 * samples.rate("tokens", start + trim, end - trim)
        elapsed = mod.loop_s if not mod.stopped else end - start  # a stopped run: the time it was sending
        run_rpm, run_tpm = 60 * accepted / elapsed, 60 * tokens / elapsed
        bound = run_rpm / phase.rpm if phase.binding == "rpm" else run_tpm / phase.tpm
        steady = steady_rpm / phase.rpm if phase.binding == "rpm" else steady_tpm / phase.tpm
        done = f"{mod.rows:,}" + (" (stopped)" if mod.stopped else "")
        ok = bound >= TARGET and steady >= TARGET and mod.rate_limited == 0
        rows.append([phase.name, f"{phase.rpm:,.0f} / {phase.tpm:,.0f}", f"{n:,}", done, f"{elapsed:.1f}",
                     f"{run_rpm:,.0f} ({run_rpm / phase.rpm:.3f})", f"{run_tpm:,.0f} ({run_tpm / phase.tpm:.3f})",
                     f"{steady:.3f}", mod.rate_limited, "yes" if ok else "**no**"])
        figures[phase.key] = {"run": bound, "steady": steady, "rate_limited": mod.rate_limited}
    report.add_table(["phase", "configured RPM / TPM", "rows", "answered", "run s", "achieved RPM (ratio)",
                      "achieved TPM (ratio)", "binding limit, steady middle", "429s",
                      f">= {TARGET} and no 429"], rows)
    report.note("Achieved = what the simulator accepted (billed answers, their prompt + completion tokens) "
                "over moderate's own run time (for a stopped run: the time the simulator was receiving); the "
                "steady ratio leaves out the first and last 10 % of that time (the one-second burst a full "
                "bucket allows at the start, and the tail). Commands: "
                + "; ".join(f"`{shown_cmd(c)}`" for c in commands) + ".")
    report.results.update(figures)
    results["limiter"] = figures
    return report


def _tokens(stats: dict[str, Any]) -> int:
    return stats["prompt_tokens"] + stats["completion_tokens"]
