"""The spending cap: expected costs in flight fit under it, worst costs under it plus the slack."""

from __future__ import annotations

import pytest

from pipeline.budget import Budget


def test_no_cap_reserves_anything_and_counts_only_what_was_charged() -> None:
    budget = Budget(None)
    assert budget.reserve(1e9, 1e12)
    assert (budget.expected, budget.worst, budget.in_flight) == (0.0, 0.0, 0)
    budget.settle(1e9, 1e12, 0.25)
    assert budget.spent == 0.25 and budget.exhausted


def test_expected_costs_in_flight_count_against_the_cap() -> None:
    budget = Budget(1.0, spent=0.25)
    assert budget.reserve(0.5, 0.5)
    assert not budget.reserve(0.5, 0.5)  # 0.25 + 0.5 + 0.5 > 1
    assert budget.reserve(0.25, 0.3)  # exactly the cap; worst 1.05 within the 10 % slack
    assert (budget.expected, budget.worst, budget.in_flight) == (pytest.approx(0.75), pytest.approx(0.8), 2)


def test_worst_costs_in_flight_stay_under_the_cap_plus_the_slack() -> None:
    budget = Budget(1.0, slack=0.1)
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
