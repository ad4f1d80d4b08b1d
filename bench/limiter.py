"""Benchmark 3, limiter accuracy: `moderate run --rpm R --tpm T` against a simulator enforcing R and T.

Two phases: one where the request limit binds, one where the token limit binds. Achieved rates
come from the simulator's counters (what it accepted) over the run's elapsed time, and over the
steady middle of the run (first and last 10 % left out); every 429 counts against the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.common import TWEETS_ROWS, Report, StatsSampler, run_moderate, shown_cmd, simulator

LATENCY_MS = 100
JITTER_MS = 20
TOKENS_PER_ROW = 558  # simulator's prompt + completion tokens per tweet under the spam policy (benchmark 1)
TARGET = 0.97


@dataclass(slots=True)
class Phase:
    name: str
    rpm: float
    tpm: float
    binding: str  # "rpm" or "tpm"

    def rows(self, seconds: float) -> int:
        per_s = self.rpm / 60 if self.binding == "rpm" else self.tpm / 60 / TOKENS_PER_ROW
        return min(TWEETS_ROWS, round(per_s * seconds))


PHASES = (Phase("request limit binds", 1200, 2_000_000, "rpm"), Phase("token limit binds", 6000, 300_000, "tpm"))


def run(*, long: bool, results: dict[str, Any]) -> Report:
    seconds = 90.0 if long else 30.0
    report = Report(f"3. Limiter accuracy (~{seconds:g} s per phase, simulator enforcing the same limits, "
                    f"{LATENCY_MS} ± {JITTER_MS} ms)")
    rows, figures, commands = [], {}, []
    for phase in PHASES:
        with simulator("--latency-ms", str(LATENCY_MS), "--jitter-ms", str(JITTER_MS), "--rpm", f"{phase.rpm:.0f}",
                       "--tpm", f"{phase.tpm:.0f}", max_seconds=seconds * 3 + 120) as sim:
            n = phase.rows(seconds)
            with StatsSampler(sim) as samples:
                limits = ["--rpm", f"{phase.rpm:.0f}", "--tpm", f"{phase.tpm:.0f}"]
                mod, cmd = run_moderate(sim, name=f"limiter-{phase.binding}", store=None, timeout=seconds * 2 + 60,
                                        stop_after=seconds * 1.5, extra=["--limit", str(n), *limits])
        commands.append(cmd)
        first, last = samples.points[0][1], samples.points[-1][1]
        accepted = last["billed"] - first["billed"]
        tokens = _tokens(last) - _tokens(first)
        start, end = samples.active_span()
        trim = 0.1 * (end - start)
        steady_rpm = 60 * samples.rate("billed", start + trim, end - trim)
        steady_tpm = 60 * samples.rate("tokens", start + trim, end - trim)
        run_rpm, run_tpm = 60 * accepted / mod.loop_s, 60 * tokens / mod.loop_s
        bound = run_rpm / phase.rpm if phase.binding == "rpm" else run_tpm / phase.tpm
        steady = steady_rpm / phase.rpm if phase.binding == "rpm" else steady_tpm / phase.tpm
        done = f"{mod.rows}" + (" (stopped at 1.5x the planned time)" if mod.stopped else "")
        rows.append([phase.name, f"{phase.rpm:,.0f} / {phase.tpm:,.0f}", f"{n:,}", done, f"{mod.loop_s:.1f}",
                     f"{run_rpm:,.0f} ({run_rpm / phase.rpm:.3f})", f"{run_tpm:,.0f} ({run_tpm / phase.tpm:.3f})",
                     f"{steady:.3f}", mod.rate_limited,
                     "yes" if bound >= TARGET and steady >= TARGET and mod.rate_limited == 0 else "**no**"])
        figures[phase.binding] = {"run": bound, "steady": steady, "rate_limited": mod.rate_limited}
    report.add_table(["phase", "configured RPM / TPM", "rows", "answered", "run s", "achieved RPM (ratio)",
                      "achieved TPM (ratio)", "binding ratio, steady middle", "429s",
                      f">= {TARGET} and no 429"], rows)
    report.note("Achieved = what the simulator accepted (billed answers, their prompt + completion tokens) "
                "over moderate's own run time; the steady ratio leaves out the first and last 10 % of the "
                "time the simulator was receiving (the one-second burst a full bucket allows at the start, "
                "and the tail). Commands: " + "; ".join(f"`{shown_cmd(c)}`" for c in commands) + ".")
    report.results.update(figures)
    results["limiter"] = figures
    return report


def _tokens(stats: dict[str, Any]) -> int:
    return stats["prompt_tokens"] + stats["completion_tokens"]
