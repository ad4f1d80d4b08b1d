"""The spending cap: money spent plus money in flight never passes it."""

from __future__ import annotations

import pytest

from pipeline.budget import Budget


def test_no_cap_reserves_anything() -> None:
    budget = Budget(None)
    assert budget.reserve(1e9)
    assert budget.reserved == 1e9


def test_reservations_in_flight_count_against_the_cap() -> None:
    budget = Budget(1.0, spent=0.25)
    assert budget.reserve(0.5)
    assert not budget.reserve(0.5)  # 0.25 + 0.5 + 0.5 > 1
    assert budget.reserve(0.25)  # exactly the cap
    assert budget.reserved == pytest.approx(0.75)


def test_settle_releases_the_reservation_and_adds_the_charge() -> None:
    budget = Budget(1.0)
    budget.reserve(0.5)
    budget.settle(0.5, 0.1)
    assert (budget.reserved, budget.spent) == (0.0, pytest.approx(0.1))
    assert budget.reserve(0.9)


def test_settle_never_leaves_a_negative_reservation() -> None:
    budget = Budget(1.0)
    budget.settle(0.3, 0.0)
    assert budget.reserved == 0.0


def test_exhausted_only_when_nothing_is_in_flight() -> None:
    budget = Budget(1.0, spent=0.9)
    assert budget.exhausted
    assert budget.reserve(0.05)
    assert not budget.reserve(0.2)
    assert not budget.exhausted  # the attempt in flight may free room
    budget.settle(0.05, 0.05)
    assert budget.exhausted and not budget.reserve(0.2)


def test_a_charge_above_the_reservation_is_still_counted() -> None:
    budget = Budget(1.0)
    budget.reserve(0.1)
    budget.settle(0.1, 0.3)  # the host's own cost figure may exceed our estimate
    assert budget.spent == pytest.approx(0.3)
