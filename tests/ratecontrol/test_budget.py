"""The spending cap: expected costs in flight fit under it, worst costs under it plus the slack."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import make_config, run_pipeline, write_jsonl

from pipeline.core import exitcodes
from pipeline.core.cost import Pricing
from pipeline.core.records import Usage
from pipeline.ratecontrol.budget import Budget
from pipeline.simulator import Faults, SimulatorConfig, SimulatorStats


def answered(cap: float | None, **kwargs: float) -> Budget:
    """A budget that has seen a first answer (billed 100 completion tokens)."""
    budget = Budget(cap, **kwargs)
    budget.billed_completion(100)
    return budget


def test_no_cap_reserves_anything_and_counts_only_what_was_charged() -> None:
    budget = Budget(None)
    assert budget.reserve(1e9, 1e12)
    assert (budget.expected, budget.worst, budget.in_flight) == (0.0, 0.0, 0)
    budget.settle(1e9, 1e12, 0.25)
    assert budget.spent == 0.25 and budget.exhausted


def test_expected_costs_in_flight_count_against_the_cap() -> None:
    budget = answered(1.0, spent=0.25)
    assert budget.reserve(0.5, 0.5)
    assert not budget.reserve(0.5, 0.5)  # 0.25 + 0.5 + 0.5 > 1
    assert budget.reserve(0.25, 0.3)  # exactly the cap; worst 1.05 within the 10 % slack
    assert (budget.expected, budget.worst, budget.in_flight) == (pytest.approx(0.75), pytest.approx(0.8), 2)


def test_worst_costs_in_flight_stay_under_the_cap_plus_the_slack() -> None:
    budget = answered(1.0, slack=0.1)
    assert budget.reserve(0.1, 0.9)
    assert not budget.reserve(0.1, 0.25)  # worst 1.15 > 1.1
    assert budget.reserve(0.1, 0.2)  # worst 1.1


def test_one_call_alone_may_go_while_its_expected_cost_fits() -> None:
    budget = Budget(1.0)
    assert budget.reserve(0.5, 5.0)  # its whole output cap could cost 5x the cap, but nothing else is in flight
    assert not budget.reserve(0.01, 0.01)


def test_settle_releases_the_reservation_and_adds_the_charge() -> None:
    budget = Budget(1.0)
    budget.reserve(0.5, 0.8)
    budget.settle(0.5, 0.8, 0.1)
    assert (budget.expected, budget.worst, budget.in_flight, budget.spent) == (0.0, 0.0, 0, pytest.approx(0.1))
    assert budget.reserve(0.9, 0.9)


def test_settle_never_leaves_negative_reservations() -> None:
    budget = Budget(1.0)
    budget.settle(0.3, 0.4, 0.0)
    assert (budget.expected, budget.worst, budget.in_flight) == (0.0, 0.0, 0)


def test_exhausted_only_when_nothing_is_in_flight() -> None:
    budget = Budget(1.0, spent=0.9)
    assert budget.exhausted
    assert budget.reserve(0.05, 0.1)
    assert not budget.reserve(0.2, 0.2)
    assert not budget.exhausted  # the attempt in flight may free room
    budget.settle(0.05, 0.1, 0.05)
    assert budget.exhausted and not budget.reserve(0.2, 0.2)


def test_a_charge_above_the_reservation_is_still_counted() -> None:
    budget = Budget(1.0)
    budget.reserve(0.1, 0.2)
    budget.settle(0.1, 0.2, 0.3)  # the host's own cost figure may exceed our estimate
    assert budget.spent == pytest.approx(0.3)


def test_until_a_first_answer_shows_what_the_host_bills_one_call_goes_at_a_time() -> None:
    budget = Budget(1.0)
    assert budget.reserve(0.01, 0.01)
    assert not budget.reserve(0.01, 0.01)  # the host may bill far past the output cap: wait for its bill
    budget.billed_completion(50)
    budget.settle(0.01, 0.01, 0.01)
    assert budget.reserve(0.01, 0.01) and budget.reserve(0.01, 0.01)


def test_the_worst_case_is_the_longest_completion_billed_when_the_host_bills_past_the_output_cap() -> None:
    budget = Budget(1.0)
    assert budget.worst_completion(256) == 256
    budget.billed_completion(8_000)
    budget.billed_completion(30)
    assert budget.worst_completion(256) == 8_000 and budget.worst_completion(16_384) == 16_384


# ---- --max-cost against the simulator, over loopback -----------------------------------------------

PRICES = {"input_per_million": 0.075, "cached_input_per_million": 0.0375, "output_per_million": 0.30}


def _texts(tmp_path: Path, n: int) -> Path:
    words = ["free money click here", "lovely weather today", "buy now", "you people are vermin", "nice"]
    return write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"{words[i % 5]} {i}"} for i in range(n)])


def billed_usd(stats: SimulatorStats) -> float:
    """What the simulator billed, at the test's prices."""
    return Pricing(*PRICES.values()).cost(Usage(stats.prompt_tokens, stats.cached_tokens, stats.completion_tokens))


def test_max_cost_holds_within_ten_percent_against_a_host_that_bills_past_max_tokens(tmp_path: Path) -> None:
    cap = 0.05  # each answer bills about 8,000 completion tokens ($0.0024) whatever max_tokens says
    config = make_config(tmp_path, [_texts(tmp_path, 300)], policies=["spam"], concurrency=64, max_cost=cap,
                         max_tokens=256, **PRICES)
    result = run_pipeline(config, SimulatorConfig(latency_ms=20, bills_past_max_tokens=8_000))
    assert result.code == exitcodes.EXIT_BUDGET, result.stderr
    assert result.report()["cost_usd"] == pytest.approx(billed_usd(result.stats), abs=1e-8)
    assert 0.9 * cap <= billed_usd(result.stats) <= 1.1 * cap, billed_usd(result.stats)


def test_max_cost_counts_every_billed_answer_whose_details_are_odd_or_whose_content_is_unusable(
        tmp_path: Path) -> None:
    cap = 0.001  # about 20 answers
    config = make_config(tmp_path, [_texts(tmp_path, 200)], policies=["spam"], concurrency=16, max_cost=cap,
                         max_attempts=3, **PRICES)
    faults = Faults(odd_details=0.5, odd_content=0.2, content_parts=0.1)
    result = run_pipeline(config, SimulatorConfig(latency_ms=5, faults=faults, seed=3))
    assert result.code == exitcodes.EXIT_BUDGET, result.stderr
    report = result.report()
    assert report["requests"] == result.stats.billed
    assert report["cost_usd"] == pytest.approx(billed_usd(result.stats), abs=1e-8)
    assert billed_usd(result.stats) <= 1.1 * cap, billed_usd(result.stats)
