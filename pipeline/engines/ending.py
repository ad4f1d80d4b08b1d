"""How a run ended, in words and as an exit code (see `pipeline.core.exitcodes`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import exitcodes
from pipeline.core.records import UNSENT_STATUSES, Status
from pipeline.engines.runstate import RunStats, RunTally

__all__ = ["PROBLEM_STATUSES", "Ending", "drifted", "exit_code", "outcome_word", "problems", "quality_code",
           "summary_line"]


@dataclass(slots=True)
class Ending:
    """How a job ended, for the library's caller: the outcome, its exit code, the output folder, spend."""

    #: finished, interrupted, budget_exhausted, aborted, write_failed, failed or nothing_to_do
    outcome: str
    exit_code: int
    out: str
    #: dollars this run charged (earlier runs of the folder are in ``report["cost_usd"]``)
    run_cost_usd: float
    #: the folder's cost report (`pipeline.report.cost_report`), None when it could not be written
    report: dict[str, Any] | None
    #: this run's counters; None when there was nothing to do
    stats: RunStats | None

#: labels that make a finished run exit 1: the rows are there, but without a usable verdict.
PROBLEM_STATUSES = (Status.FAILED, Status.INVALID_OUTPUT, Status.TRUNCATED, Status.REJECTED, Status.FILTERED,
                    Status.INPUT_ERROR)


def problems(report: dict) -> int:
    """Labels of the whole directory (earlier runs included) that are not usable verdicts."""
    return sum(report["statuses"].get(s.value, 0) for s in PROBLEM_STATUSES)


def outcome_word(result: RunTally) -> str:
    if result.internal_error:
        return "failed"
    if result.write_error:
        return "write_failed"
    if result.fatal_error:
        return "aborted"
    if result.stop_status is Status.BUDGET_EXHAUSTED:
        return "budget_exhausted"
    if result.stop_status is Status.INTERRUPTED:
        return "interrupted"
    return "finished"


def exit_code(result: RunTally, report: dict) -> int:
    if result.internal_error:
        return exitcodes.EXIT_INTERNAL
    if result.write_error:
        return exitcodes.EXIT_USAGE
    if result.fatal_error:
        return exitcodes.EXIT_ENDPOINT
    if result.stop_status is Status.BUDGET_EXHAUSTED:
        return exitcodes.EXIT_BUDGET
    if result.stop_status is Status.INTERRUPTED:
        return exitcodes.EXIT_INTERRUPTED
    if result.canaries_wrong:
        return exitcodes.EXIT_CANARY
    return quality_code(report)


def quality_code(report: dict) -> int:
    """A finished directory's code from its report: drift (7), else rows without a verdict (1), else 0."""
    if drifted(report):
        return exitcodes.EXIT_DRIFT
    return exitcodes.EXIT_ROWS_FAILED if problems(report) else exitcodes.EXIT_OK


def drifted(report: dict) -> bool:
    """Whether the report flags a policy's violation rate as moved (drift off or no history: no)."""
    return bool((report.get("drift") or {}).get("flagged"))


def summary_line(result: RunTally, report: dict, *, policies: int, labels_dir: Path, report_path: Path,
                 simulated: bool, html_path: Path | None = None) -> str:
    s = result.stats
    elapsed = result.elapsed or 1e-9
    statuses = " ".join(f"{k}={v}" for k, v in sorted(s.statuses.items()))
    prefix = "moderate [SIMULATOR]" if simulated else "moderate"
    seconds = f"{elapsed:.1f}" if elapsed >= 1 else f"{elapsed:.2f}"
    where = f"report in {report_path}" + (f" and {html_path}" if html_path is not None else "")
    return (f"{prefix}: {outcome_word(result)}: {s.labels:,} labels ({plural(policies, 'policy', 'policies')}) in "
            f"{seconds} s{_rate(s.statuses, elapsed)}; {s.billed_calls:,} calls, {s.store_hits:,} from store, "
            f"{s.duplicates:,} duplicates; this run ${s.spent_usd:.4f}, directory total "
            f"${report['cost_usd']:.4f}; {statuses or 'no labels'}; shards in {labels_dir}, {where}")


def plural(n: int, one: str, many: str) -> str:
    """ "1 policy", "4 policies"."""
    return f"{n:,} {one if n == 1 else many}"


def _rate(statuses: dict[str, int], elapsed: float) -> str:
    # rows marked unsent when a run stops are written in an instant: they are not throughput
    handled = sum(n for k, n in statuses.items() if k not in UNSENT_STATUSES)
    if handled == 0 or elapsed < 0.01:
        return ""
    return f" ({handled / elapsed:,.0f} labels/s)"
