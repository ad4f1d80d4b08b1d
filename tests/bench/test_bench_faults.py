"""The faults benchmark's arithmetic on sampled simulator counters (no benchmark is run)."""

from __future__ import annotations

import pytest

from bench.clients import StatsSampler
from bench.faults import first_answers


def sampled(*billed: int, every: float = 1.0) -> StatsSampler:
    samples = StatsSampler(None, interval=every)  # type: ignore[arg-type]  # points set by hand
    samples.points = [(i * every, {"billed": n}) for i, n in enumerate(billed)]
    return samples


def test_first_answers_count_the_share_of_answers_billed_junk_included() -> None:
    # 100 ok labels, 20 junk answers retried (billed too): 95 % of the 120 answers (114) at t = 5.4 s,
    # not 95 answers at t = 4.25 s
    samples = sampled(0, 0, 30, 60, 90, 110, 120, 120)
    rate, tail = first_answers(samples, ok=100)
    assert rate == pytest.approx(95 / (5.4 - 1.0))
    assert tail == pytest.approx(6.0 - 5.4)


def test_first_answers_of_a_clean_run_reach_95_percent_of_the_ok_labels() -> None:
    rate, tail = first_answers(sampled(0, 0, 50, 100, 100), ok=100)
    assert (rate, tail) == (pytest.approx(95 / (2.9 - 1.0)), pytest.approx(0.1))


def test_first_answers_of_a_run_that_answered_nothing_are_unknown() -> None:
    assert first_answers(sampled(0, 0, 0), ok=0) == (0.0, None)
