from __future__ import annotations

import pytest

from pipeline.ratecontrol.breaker import CircuitBreaker


def fail(breaker: CircuitBreaker, times: int, *, now: float = 0.0) -> list[float | None]:
    return [breaker.record(False, now=now) for _ in range(times)]


def succeed(breaker: CircuitBreaker, times: int, *, now: float = 0.0) -> None:
    for _ in range(times):
        assert breaker.record(True, now=now) is None


def test_stays_closed_below_the_minimum_number_of_samples() -> None:
    breaker = CircuitBreaker()
    assert fail(breaker, 19) == [None] * 19
    assert breaker.opened == 0


def test_opens_when_twenty_attempts_in_a_row_fail() -> None:
    breaker = CircuitBreaker()
    results = fail(breaker, 20, now=100.0)
    assert results[:19] == [None] * 19
    assert results[19] == 102.0  # paused for the base cool-down of 2 s
    assert breaker.open_until == 102.0
    assert breaker.opened == 1


def test_opens_at_exactly_eighty_percent_failures() -> None:
    breaker = CircuitBreaker()
    succeed(breaker, 4)
    results = fail(breaker, 16)
    assert results[-1] == 2.0
    assert results[:-1] == [None] * 15


def test_stays_closed_below_eighty_percent_failures() -> None:
    breaker = CircuitBreaker()
    succeed(breaker, 5)
    assert fail(breaker, 15) == [None] * 15  # 75 %
    assert breaker.opened == 0
    assert fail(breaker, 4) == [None] * 4  # 19 of 24: 79 %
    assert fail(breaker, 1) == [2.0]  # 20 of 25: 80 %


def test_successes_only_never_open() -> None:
    breaker = CircuitBreaker()
    succeed(breaker, 200)
    assert breaker.opened == 0 and breaker.open_until == 0.0


def test_old_attempts_leave_the_window() -> None:
    breaker = CircuitBreaker(window=50)
    succeed(breaker, 50)
    # 39 failures: the window holds 11 successes + 39 failures = 78 %
    assert fail(breaker, 39) == [None] * 39
    # the 40th failure pushes another success out: 10 + 40 = 80 % -> opens
    assert fail(breaker, 1) == [2.0]


def test_failures_while_open_do_not_reopen() -> None:
    breaker = CircuitBreaker()
    fail(breaker, 20, now=0.0)
    assert fail(breaker, 30, now=1.0) == [None] * 30  # still open until 2.0
    assert breaker.opened == 1


def test_cool_down_doubles_on_each_reopen() -> None:
    breaker = CircuitBreaker()
    now = 0.0
    pauses = []
    for _ in range(4):
        until = fail(breaker, 20, now=now)[-1]
        assert until is not None
        pauses.append(until - now)
        now = until
    assert pauses == [2.0, 4.0, 8.0, 16.0]
    assert breaker.opened == 4


def test_cool_down_is_capped() -> None:
    breaker = CircuitBreaker(cooldown=10.0, max_cooldown=25.0)
    now = 0.0
    pauses = []
    for _ in range(4):
        until = fail(breaker, 20, now=now)[-1]
        assert until is not None
        pauses.append(until - now)
        now = until
    assert pauses == [10.0, 20.0, 25.0, 25.0]


def test_a_success_resets_the_cool_down() -> None:
    breaker = CircuitBreaker()
    assert fail(breaker, 20, now=0.0)[-1] == 2.0
    assert fail(breaker, 20, now=2.0)[-1] == 6.0  # 4 s
    succeed(breaker, 1, now=6.0)
    # 1 success + 19 failures = 95 % of 20: opens again, with the base cool-down
    assert fail(breaker, 19, now=6.0)[-1] == 8.0


def test_reopening_needs_a_fresh_window_of_samples() -> None:
    breaker = CircuitBreaker()
    fail(breaker, 20, now=0.0)
    assert fail(breaker, 19, now=2.0) == [None] * 19
    assert fail(breaker, 1, now=2.0) == [6.0]


@pytest.mark.parametrize(("min_samples", "ratio"), [(5, 0.5), (10, 1.0)])
def test_thresholds_are_configurable(min_samples: int, ratio: float) -> None:
    breaker = CircuitBreaker(min_samples=min_samples, failure_ratio=ratio, cooldown=1.0)
    results = fail(breaker, min_samples, now=10.0)
    assert results[-1] == 11.0
    assert results[:-1] == [None] * (min_samples - 1)
