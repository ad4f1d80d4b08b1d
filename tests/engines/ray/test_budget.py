"""One budget for the cluster: reserved and settled in the limiter, as the local Budget is."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.engines.ray.budget import GO, SPENT, WAIT, BudgetAsk, ClusterBudget, RemoteBudget


def test_a_reservation_waits_while_others_are_in_flight_and_is_refused_once_nothing_is() -> None:
    budget = ClusterBudget(1.0)
    assert budget.ask(BudgetAsk(reserve=(0.6, 0.7))).answer == GO
    assert budget.ask(BudgetAsk(reserve=(0.6, 0.7))).answer == WAIT  # room may come back
    reply = budget.ask(BudgetAsk(settled=[(0.6, 0.7, 0.65)], longest_completion=300, reserve=(0.6, 0.7)))
    assert reply.answer == SPENT and reply.spent == 0.65 and reply.longest_completion == 300


def test_settlements_travel_with_the_next_reservation_and_survive_a_failed_call() -> None:
    cluster = ClusterBudget(10.0)
    calls: list[BudgetAsk] = []
    fail = [True]

    async def ask(request: BudgetAsk):
        calls.append(request)
        if fail[0]:
            fail[0] = False
            raise ConnectionError("limiter gone for a moment")
        return cluster.ask(request)

    async def main() -> None:
        remote = RemoteBudget(10.0, ask)
        remote.settle(1.0, 2.0, 0.5)
        remote.billed_completion(900)
        with pytest.raises(ConnectionError):
            await remote.reserve_remote(1.0, 2.0)
        assert await remote.reserve_remote(1.0, 2.0) == GO
        assert remote.in_flight == 1 and remote.worst_completion(512) == 900

    asyncio.run(main())
    assert calls[1].settled == [(1.0, 2.0, 0.5)] and calls[1].longest_completion == 900
    assert cluster.budget.spent == 0.5 and cluster.budget.in_flight == 1  # the one reservation made


def test_the_reservations_of_a_silent_process_are_released_and_a_live_one_keeps_its_own() -> None:
    budget = ClusterBudget(1.0, silent_after=30.0)
    assert budget.ask(BudgetAsk("killed", reserve=(0.5, 0.5), longest_completion=100), now=0.0).answer == GO
    assert budget.ask(BudgetAsk("alive", reserve=(0.4, 0.4)), now=0.0).answer == GO
    assert budget.ask(BudgetAsk("late", reserve=(0.3, 0.3)), now=20.0).answer == WAIT
    budget.ask(BudgetAsk("alive"), now=25.0)  # a heartbeat
    assert budget.ask(BudgetAsk("late", reserve=(0.3, 0.3)), now=31.0).answer == GO
    assert budget.released == 1 and budget.budget.in_flight == 2  # alive's and late's
    assert budget.budget.spent == 0.0
