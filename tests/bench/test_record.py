"""BENCHMARKS.md keeps one history table and the latest section of each benchmark."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bench.common import Report
from bench.record import record

INFO = {"cores": "2", "cpu": "Xeon", "ram": "8.0 GiB", "python": "3.11.7", "commit": "abc1234"}


def client_report(rows_per_s: int) -> Report:
    report = Report("1. Client overhead (zero-latency simulator)")
    report.add_table(["client", "rows/s"], [["moderate", rows_per_s]])
    return report


def run(path: Path, reports: list[Report], results: dict, hour: int, commit: str = "abc1234") -> str:
    started = dt.datetime(2026, 11, 28, hour, 0, tzinfo=dt.UTC)
    record(reports, results, command="python -m bench", started=started, info=INFO | {"commit": commit}, path=path)
    return path.read_text(encoding="utf-8")


def test_each_run_adds_a_history_row_and_replaces_the_sections_it_ran(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    results = {"client": {"ratio_run": 0.6, "store_overhead": 0.079},
               "limiter": {"rpm": {"steady": 0.986, "rate_limited": 0}, "tpm": {"steady": 0.978, "rate_limited": 2}},
               "adaptive": {"seconds": {"late_ratio": 0.996}}}
    run(path, [client_report(7000)], results, 10)
    path.write_text(path.read_text() + "\n## Notes\n\nWritten by hand.\n")
    memory = Report("4. Memory (peak RSS)")
    memory.add_table(["rows", "MB"], [[10_000, 187]])
    text = run(path, [client_report(7100), memory], {"memory": {"default store@10000": 187.0}}, 11, "def5678")

    assert text.count("### 1. Client overhead") == 1
    assert "| moderate | 7,100 |" in text and "7,000" not in text
    assert "- run: 2026-11-28 11:00 UTC, commit def5678" in text
    assert text.index("### 1. Client") < text.index("### 4. Memory") < text.index("## Notes")
    assert text.rstrip().endswith("Written by hand.")
    history = [line for line in text.split("## Latest results")[0].splitlines() if line.startswith("| 2026")]
    assert history == [
        "| 2026-11-28 10:00 | abc1234 | bench | 0.600 | 7.9% | - | - | 0.978 (2) | 0.996 |",
        "| 2026-11-28 11:00 | def5678 | bench | - | - | 187 | - | - | - |",
    ]


def test_a_failed_benchmark_keeps_its_last_good_section(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    run(path, [client_report(7000)], {}, 10)
    text = run(path, [Report("client: FAILED")], {}, 11)
    assert "| moderate | 7,000 |" in text
    assert "FAILED" not in text.split("## Latest results")[1]
