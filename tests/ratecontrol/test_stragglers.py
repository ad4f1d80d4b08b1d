"""StragglerWatch: which requests stop counting against the pool, with a fake clock."""

from __future__ import annotations

from pipeline.ratecontrol.stragglers import StragglerWatch


def _answered(watch: StragglerWatch, n: int, *, at: float, latency: float) -> float:
    """``n`` requests sent one after another from ``at``, each answered after ``latency``; the time after."""
    now = at
    for _ in range(n):
        ticket = watch.start(now)
        now += latency
        assert watch.end(ticket) is False
        watch.note_answer(latency, now)
    return now


def test_a_request_past_five_times_the_answered_latency_is_released_while_others_answer_normally() -> None:
    watch = StragglerWatch(cap=4, floor_s=0.0)
    now = _answered(watch, 40, at=0.0, latency=0.1)
    hung = watch.start(now)
    assert watch.due(now + 0.4) == []  # within 5 x p90 (0.5 s)
    now = _answered(watch, 5, at=now + 0.1, latency=0.1)  # the others still answer at normal speed
    assert watch.due(now + 0.1) == [hung]
    assert watch.released == 1 and watch.due(now + 0.2) == []  # released once
    assert watch.end(hung) is True and watch.released == 0


def test_nothing_is_released_when_every_answer_slows_down() -> None:
    watch = StragglerWatch(cap=10, floor_s=0.0)
    now = _answered(watch, 40, at=0.0, latency=0.1)
    tickets = [watch.start(now) for _ in range(8)]  # the host is overloaded: nobody answers for 3 s
    assert watch.due(now + 3.0) == []
    assert all(watch.end(t) is False for t in tickets)


def test_released_requests_never_exceed_the_cap_and_the_oldest_go_first() -> None:
    watch = StragglerWatch(cap=2, floor_s=0.0)
    now = _answered(watch, 40, at=0.0, latency=0.1)
    first, second, third = (watch.start(now + i * 0.01) for i in range(3))
    now = _answered(watch, 3, at=now + 1.0, latency=0.1)
    assert watch.due(now) == [first, second]
    assert watch.due(now + 1.0) == []
    watch.end(first)
    now = _answered(watch, 3, at=now + 1.0, latency=0.1)
    assert watch.due(now) == [third]


def test_nothing_is_released_before_enough_answers_or_under_the_floor() -> None:
    watch = StragglerWatch(cap=5, floor_s=2.0)
    early = watch.start(0.0)
    assert watch.due(100.0) == []  # no answers yet: no threshold
    watch.end(early)
    now = _answered(watch, 30, at=0.0, latency=0.01)
    assert watch.threshold == 2.0
    slow = watch.start(now)
    later = _answered(watch, 100, at=now, latency=0.015)  # 1.5 s of normal answers
    assert watch.due(later) == []
    later = _answered(watch, 50, at=later, latency=0.015)
    assert watch.due(later) == [slow]


def test_a_straggler_latency_does_not_raise_the_threshold() -> None:
    watch = StragglerWatch(cap=5, floor_s=0.0)
    now = _answered(watch, 40, at=0.0, latency=0.1)
    before = watch.threshold
    hung = watch.start(now)
    now = _answered(watch, 5, at=now + 0.6, latency=0.1)
    assert watch.due(now) == [hung]
    assert watch.end(hung) is True  # the caller notes no latency for a released request
    now = _answered(watch, 10, at=now + 10.0, latency=0.1)
    assert watch.threshold == before
