"""Run settings, counters and ids."""

from __future__ import annotations

import re
import time

import pytest

import pipeline.engines.runstate as runstate_module
from pipeline.engines.runstate import RunStats, RunTally, new_run_id


def test_run_ids_are_unique() -> None:
    # 32 random bits per id: 20 ids in one second collide with a chance of about 5e-8
    ids = [new_run_id() for _ in range(20)]
    assert len(set(ids)) == 20
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", i) for i in ids)


def test_run_id_starts_with_the_current_time() -> None:
    before = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_id = new_run_id()
    after = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    assert before <= run_id.split("-")[0] <= after


def test_run_ids_sort_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    instants = iter([1_700_000_000, 1_700_000_001, 1_700_000_059, 1_700_003_600, 1_800_000_000])
    real_strftime = time.strftime

    def fake_strftime(fmt: str, t: time.struct_time | None = None) -> str:
        return real_strftime(fmt, time.gmtime(next(instants)))

    monkeypatch.setattr(runstate_module.time, "strftime", fake_strftime)
    ids = [new_run_id() for _ in range(5)]
    assert ids[0].startswith("20231114T221320Z-")
    assert sorted(ids) == ids


def test_a_new_result_has_not_stopped_and_counts_nothing() -> None:
    result = RunTally(RunStats(), 0.0, 0, None)
    assert (result.fatal_error, result.write_error, result.internal_error, result.input_exhausted) == (
        None, None, None, False)
    assert result.stats.labels == 0 and not result.stats.statuses
