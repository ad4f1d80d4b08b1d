"""How a run ended: the outcome word, the exit code and the summary line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from support import make_config, run_pipeline, write_jsonl

from pipeline.core import exitcodes
from pipeline.core.records import Status
from pipeline.engines.ending import PROBLEM_STATUSES, exit_code, outcome_word, problems, summary_line
from pipeline.engines.runstate import RunStats, RunTally
from pipeline.simulator import Faults, SimulatorConfig

CLEAN = {"statuses": {"ok": 10, "skipped_empty": 2, "too_long": 1}, "cost_usd": 0.5}


def result(**fields: object) -> RunTally:
    r = RunTally(RunStats(), 2.0, 10, None)
    for name, value in fields.items():
        setattr(r, name, value)
    return r


@pytest.mark.parametrize(
    ("fields", "word", "code"),
    [
        ({}, "finished", exitcodes.EXIT_OK),
        ({"stop_status": Status.INTERRUPTED}, "interrupted", exitcodes.EXIT_INTERRUPTED),
        ({"stop_status": Status.BUDGET_EXHAUSTED}, "budget_exhausted", exitcodes.EXIT_BUDGET),
        ({"stop_status": Status.ABORTED, "fatal_error": "HTTP 401: bad key"}, "aborted", exitcodes.EXIT_ENDPOINT),
        ({"stop_status": Status.ABORTED, "write_error": "disk full"}, "write_failed", exitcodes.EXIT_USAGE),
        ({"internal_error": "internal error: KeyError"}, "failed", exitcodes.EXIT_INTERNAL),
    ],
)
def test_outcome_word_and_exit_code(fields: dict, word: str, code: int) -> None:
    r = result(**fields)
    assert (outcome_word(r), exit_code(r, CLEAN)) == (word, code)


def test_a_bug_outranks_every_other_ending() -> None:
    r = result(internal_error="bug", write_error="disk full", fatal_error="bad key", stop_status=Status.ABORTED)
    assert (outcome_word(r), exit_code(r, CLEAN)) == ("failed", exitcodes.EXIT_INTERNAL)


def test_a_write_error_outranks_a_fatal_endpoint_error() -> None:
    r = result(write_error="disk full", fatal_error="bad key")
    assert exit_code(r, CLEAN) == exitcodes.EXIT_USAGE


@pytest.mark.parametrize("status", PROBLEM_STATUSES)
def test_a_finished_run_with_problem_labels_exits_1(status: Status) -> None:
    report = {"statuses": {"ok": 3, status.value: 2}, "cost_usd": 0.0}
    assert problems(report) == 2
    assert exit_code(result(), report) == exitcodes.EXIT_ROWS_FAILED


def test_unsent_and_skipped_labels_are_not_problems() -> None:
    report = {"statuses": {"skipped_empty": 1, "too_long": 1, "budget_exhausted": 4, "interrupted": 1}}
    assert problems(report) == 0


def test_summary_line_names_counts_costs_and_places() -> None:
    stats = RunStats(labels=120, sent=50, billed_calls=50, store_hits=40, duplicates=30, spent_usd=0.0123,
                     statuses=Counter({"ok": 118, "failed": 2}))
    line = summary_line(RunTally(stats, 4.0, 60, None), CLEAN, policies=2, labels_dir=Path("out/labels"),
                        report_path=Path("out/cost_report.md"), simulated=False)
    assert line == ("moderate: finished: 120 labels (2 policies) in 4.0 s (30 labels/s); 50 calls, 40 from store, "
                    "30 duplicates; this run $0.0123, directory total $0.5000; failed=2 ok=118; shards in "
                    "out/labels, report in out/cost_report.md")


def test_summary_line_of_a_simulated_instant_run_without_labels() -> None:
    line = summary_line(RunTally(RunStats(), 0.0, 0, None), CLEAN, policies=1, labels_dir=Path("l"),
                        report_path=Path("r"), simulated=True)
    assert line.startswith("moderate [SIMULATOR]: finished: 0 labels (1 policy) in 0.00 s; 0 calls")
    assert "no labels" in line


def test_the_rate_of_a_stopped_run_leaves_out_the_rows_marked_unsent_at_the_stop() -> None:
    stats = RunStats(labels=54_000, statuses=Counter({"ok": 100, "aborted": 53_900}))
    line = summary_line(RunTally(stats, 1.0, 54_000, None, fatal_error="401"), CLEAN, policies=4,
                        labels_dir=Path("l"), report_path=Path("r"), simulated=False)
    assert "(100 labels/s)" in line and "53,9" not in line.split("labels/s")[0].split("(")[-1]
    nothing = summary_line(RunTally(RunStats(labels=9, statuses=Counter({"interrupted": 9})), 2.0, 9, None),
                           CLEAN, policies=1, labels_dir=Path("l"), report_path=Path("r"), simulated=False)
    assert "labels/s" not in nothing


def test_summary_line_names_the_html_report_when_there_is_one() -> None:
    line = summary_line(RunTally(RunStats(), 1.0, 0, None), CLEAN, policies=2, labels_dir=Path("o/labels"),
                        report_path=Path("o/cost_report.md"), simulated=False, html_path=Path("o/report.html"))
    assert line.endswith("report in o/cost_report.md and o/report.html")


def test_drift_exits_7_over_failed_rows_but_under_canaries_and_stops() -> None:
    drifting = {"statuses": {"ok": 5, "failed": 1}, "cost_usd": 0.1, "drift": {"flagged": "drift: spam 25% -> 99%"}}
    assert exit_code(result(), drifting) == exitcodes.EXIT_DRIFT == 7
    assert exit_code(result(canaries_wrong=1), drifting) == exitcodes.EXIT_CANARY
    assert exit_code(result(stop_status=Status.INTERRUPTED), drifting) == exitcodes.EXIT_INTERRUPTED
    assert exit_code(result(), {**drifting, "drift": {"flagged": "", "off": True}}) == exitcodes.EXIT_ROWS_FAILED
    assert "  7  " in exitcodes.HELP


def test_wrong_canaries_exit_6_over_failed_rows_but_under_a_stop() -> None:
    failing = {"statuses": {"ok": 5, "failed": 1}, "cost_usd": 0.1}
    assert exit_code(result(canaries_wrong=1), failing) == exitcodes.EXIT_CANARY == 6
    assert exit_code(result(canaries_wrong=1, stop_status=Status.BUDGET_EXHAUSTED), CLEAN) == exitcodes.EXIT_BUDGET
    assert "  6  " in exitcodes.HELP


def test_summary_line_counts_the_calls_billed_not_the_rows_sent() -> None:
    stats = RunStats(labels=10, sent=10, billed_calls=14, statuses=Counter({"ok": 10}))
    line = summary_line(RunTally(stats, 1.0, 10, None), CLEAN, policies=1, labels_dir=Path("l"),
                        report_path=Path("r"), simulated=False)
    assert "; 14 calls, " in line


def test_summary_line_calls_are_what_the_host_billed_when_answers_are_retried(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"buy now {i}"} for i in range(60)])
    config = make_config(tmp_path, [rows], policies=["spam"], invalid_output_retries=5)
    result = run_pipeline(config, SimulatorConfig(faults=Faults(junk_output=0.3, error_5xx=0.2), seed=2))
    # a row may run out of attempts (invalid_output, exit 1): the draws depend on the order of requests
    assert result.code in (exitcodes.EXIT_OK, exitcodes.EXIT_ROWS_FAILED), result.stderr
    assert result.stats.billed > 60 and result.report()["requests"] == result.stats.billed
    assert f"; {result.stats.billed:,} calls, " in result.stderr.splitlines()[-1]
