"""`decide`: every branch with exact numbers, and the backoff it draws from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.call.answers import read_reply
from pipeline.core.records import Status
from pipeline.ratecontrol.decide import (
    Accept,
    Attempt,
    AttemptKind,
    GiveUp,
    LongRefusals,
    Poll,
    Retry,
    RetryRules,
    RetryState,
    StopRun,
    backoff_delay,
    decide,
)

RULES = RetryRules(max_attempts=3, max_refusals=4, invalid_output_retries=2, max_tokens_cap=400,
                   max_retry_after=60.0, backoff_base=0.5, backoff_cap=30.0)


def state(max_tokens: int = 100) -> RetryState:
    return RetryState(max_tokens=max_tokens)


def run(kind: AttemptKind, times: int, s: RetryState, *, rand: float = 0.5, **fields: object) -> list:
    return [decide(Attempt(kind, **fields), s, RULES, rand=rand) for _ in range(times)]  # type: ignore[arg-type]


# ---- backoff -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 30.0), (50, 30.0)],
)
def test_backoff_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    assert backoff_delay(attempt, rand=0.0) == 0.0
    assert backoff_delay(attempt, rand=0.5) == ceiling / 2


def test_backoff_custom_base_and_cap() -> None:
    assert backoff_delay(3, base=1.0, cap=3.0, rand=0.5) == 1.5
    assert backoff_delay(2, base=1.0, cap=3.0, rand=0.25) == 0.5


def test_backoff_survives_absurd_attempt_numbers() -> None:
    assert backoff_delay(10_000, rand=0.5) == 15.0
    assert backoff_delay(0, rand=0.5) == 0.25  # treated as the first retry
    assert backoff_delay(-7, rand=0.5) == 0.25


@given(st.integers(min_value=-5, max_value=5000), st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_backoff_stays_within_zero_and_the_cap(attempt: int, rand: float) -> None:
    assert 0.0 <= backoff_delay(attempt, rand=rand) < 30.0


# ---- billed answers ------------------------------------------------------------------------------


def test_an_answer_is_accepted_and_counted() -> None:
    s = state()
    assert decide(Attempt(AttemptKind.ANSWER), s, RULES, rand=0.5) == Accept()
    assert (s.attempts, s.failures, s.refusals, s.invalid) == (1, 0, 0, 0)


def test_a_row_error_gives_up_rejected_at_once_with_its_message() -> None:
    s = state()
    assert decide(Attempt(AttemptKind.ROW_ERROR, "HTTP 400: too big"), s, RULES, rand=0.5) \
        == GiveUp(Status.REJECTED, "HTTP 400: too big")
    assert s.attempts == 1


def test_a_fatal_answer_stops_the_run_with_the_hosts_words() -> None:
    assert decide(Attempt(AttemptKind.FATAL, "HTTP 401: bad key"), state(), RULES, rand=0.5) \
        == StopRun("HTTP 401: bad key")
    assert decide(Attempt(AttemptKind.FATAL), state(), RULES, rand=0.5) == StopRun("the endpoint refused the run")


def test_filtered_gives_up_filtered() -> None:
    assert decide(Attempt(AttemptKind.FILTERED, "withheld"), state(), RULES, rand=0.5) \
        == GiveUp(Status.FILTERED, "withheld")


def test_truncated_doubles_max_tokens_up_to_the_cap_then_gives_up() -> None:
    s = state(100)
    actions = run(AttemptKind.TRUNCATED, 3, s, error="cut off")
    assert actions == [Retry(0.0), Retry(0.0), GiveUp(Status.TRUNCATED, "cut off")]
    assert s.max_tokens == 400  # 100 -> 200 -> 400: the cap, so the third cut-off gives up


def test_truncated_doubling_stops_exactly_at_the_cap() -> None:
    s = state(300)
    assert run(AttemptKind.TRUNCATED, 2, s) == [Retry(0.0), GiveUp(Status.TRUNCATED, None)]
    assert s.max_tokens == 400  # min(cap, 600)


def test_invalid_output_is_retried_invalid_output_retries_times() -> None:
    s = state()
    actions = run(AttemptKind.INVALID, 3, s, error="not a verdict")
    assert actions == [Retry(0.0), Retry(0.0), GiveUp(Status.INVALID_OUTPUT, "not a verdict")]
    assert (s.invalid, s.failures) == (3, 0)


def test_zero_invalid_output_retries_gives_up_on_the_first() -> None:
    rules = RetryRules(invalid_output_retries=0)
    assert decide(Attempt(AttemptKind.INVALID, "junk"), state(), rules, rand=0.5) \
        == GiveUp(Status.INVALID_OUTPUT, "junk")


# ---- refusals ------------------------------------------------------------------------------------


def test_refusal_waits_what_the_host_asked() -> None:
    assert decide(Attempt(AttemptKind.REFUSED, "429", retry_after=7.0), state(), RULES, rand=0.5) == Retry(7.0)


def test_refusal_wait_is_capped_by_max_retry_after() -> None:
    # without a spent quota, one request told to come back later says nothing about the others
    assert decide(Attempt(AttemptKind.REFUSED, retry_after=3600.0), state(), RULES, rand=0.5) == Retry(60.0)


def test_a_quota_spent_for_longer_than_max_retry_after_stops_the_run_saying_when() -> None:
    s = state()
    action = decide(Attempt(AttemptKind.REFUSED, "HTTP 429: free-models-per-day", 25_500.0, quota_spent=True),
                    s, RULES, rand=0.5)
    assert action == StopRun("HTTP 429: free-models-per-day: the host's quota is spent; it resets in 7 h 5 min, "
                             "longer than max_retry_after (60 s): run the same command after that")
    assert s.refusals == 0


def test_a_quota_spent_for_weeks_reads_as_words() -> None:
    action = decide(Attempt(AttemptKind.REFUSED, "HTTP 429: capped", 1e12, quota_spent=True), state(), RULES, rand=0.5)
    assert isinstance(action, StopRun)
    assert "the host's quota is spent; it resets in more than a week, longer than" in action.reason


def test_a_quota_spent_until_within_max_retry_after_is_waited_for() -> None:
    action = decide(Attempt(AttemptKind.REFUSED, "limit_rpm", 45.0, quota_spent=True), state(), RULES, rand=0.5)
    assert action == Retry(45.0)


def test_refusal_with_a_tiny_retry_after_still_waits_a_tenth_of_the_backoff() -> None:
    s = state()
    s.refusals = 3  # the 4th refusal: backoff ceiling 4 s, drawn 0.5 -> 2 s, a tenth 0.2 s
    assert decide(Attempt(AttemptKind.REFUSED, retry_after=0.0), s, RULES, rand=0.5) == Retry(pytest.approx(0.2))


def test_refusal_without_retry_after_uses_jittered_backoff() -> None:
    s = state()
    actions = run(AttemptKind.REFUSED, 3, s, rand=0.5)
    assert actions == [Retry(0.25), Retry(0.5), Retry(1.0)]
    assert run(AttemptKind.REFUSED, 1, state(), rand=0.0) == [Retry(0.0)]


def test_refusals_have_their_own_budget_and_cost_no_attempt() -> None:
    s = state()
    actions = run(AttemptKind.REFUSED, 5, s, error="HTTP 429: busy", retry_after=1.0)
    assert actions[:4] == [Retry(1.0)] * 4  # max_refusals = 4 > max_attempts = 3
    assert actions[4] == GiveUp(Status.FAILED, "HTTP 429: busy (after 5 attempts)")
    assert (s.refusals, s.failures) == (5, 0)


def test_refusals_do_not_use_up_the_failure_budget() -> None:
    s = state()
    run(AttemptKind.REFUSED, 4, s)
    assert run(AttemptKind.FAILED, 3, s, error="HTTP 500: boom")[:2] == [Retry(0.25), Retry(0.5)]
    assert s.failures == 3


# ---- failures ------------------------------------------------------------------------------------


def test_failures_count_against_max_attempts_with_backoff() -> None:
    s = state()
    actions = run(AttemptKind.FAILED, 3, s, error="server closed the connection")
    assert actions == [Retry(0.25), Retry(0.5),
                       GiveUp(Status.FAILED, "server closed the connection (after 3 attempts)")]


def test_timeouts_are_failures() -> None:
    s = state()
    assert run(AttemptKind.TIMEOUT, 3, s, rand=0.0, error="no answer within 2 s")[-1] \
        == GiveUp(Status.FAILED, "no answer within 2 s (after 3 attempts)")


def test_failure_with_retry_after_waits_at_least_that() -> None:
    assert decide(Attempt(AttemptKind.FAILED, retry_after=5.0), state(), RULES, rand=0.5) == Retry(5.0)
    assert decide(Attempt(AttemptKind.FAILED, retry_after=0.1), state(), RULES, rand=0.5) == Retry(0.25)
    assert decide(Attempt(AttemptKind.FAILED, retry_after=500.0), state(), RULES, rand=0.5) == Retry(60.0)


def test_failure_without_a_message_says_no_usable_answer() -> None:
    s = state()
    assert run(AttemptKind.FAILED, 3, s)[-1] == GiveUp(Status.FAILED, "no usable answer (after 3 attempts)")


def test_attempts_count_every_kind_in_the_error() -> None:
    s = state()
    decide(Attempt(AttemptKind.INVALID), s, RULES, rand=0.5)
    decide(Attempt(AttemptKind.REFUSED), s, RULES, rand=0.5)
    actions = run(AttemptKind.FAILED, 3, s, error="boom")
    assert actions[-1] == GiveUp(Status.FAILED, "boom (after 5 attempts)")


# ---- queued answers ------------------------------------------------------------------------------


def test_queued_answer_is_polled_after_its_eta_at_its_url() -> None:
    s = state()
    url = "https://host.example/fetch/42"
    assert decide(Attempt(AttemptKind.QUEUED, retry_after=12.0, poll_url=url), s, RULES, rand=0.5) \
        == Poll(12.0, url)
    assert s.poll_url == url and s.refusals == 1


def test_queued_answer_without_eta_is_polled_after_a_second_and_eta_is_capped() -> None:
    url = "https://host.example/fetch/1"
    assert decide(Attempt(AttemptKind.QUEUED, poll_url=url), state(), RULES, rand=0.5) == Poll(1.0, url)
    assert decide(Attempt(AttemptKind.QUEUED, retry_after=900.0, poll_url=url), state(), RULES, rand=0.5) \
        == Poll(60.0, url)


def test_polling_uses_the_refusal_budget() -> None:
    s = state()
    url = "https://host.example/fetch/1"
    actions = run(AttemptKind.QUEUED, 5, s, poll_url=url)
    assert actions[:4] == [Poll(1.0, url)] * 4
    assert actions[4] == GiveUp(Status.FAILED, "answer still queued (after 5 attempts)")


def test_queued_without_a_url_is_a_failure() -> None:
    s = state()
    assert decide(Attempt(AttemptKind.QUEUED, "no url"), s, RULES, rand=0.5) == Retry(0.25)
    assert (s.failures, s.poll_url) == (1, None)


# ---- a run of refusals asking for longer than max_retry_after --------------------------------------

STORM = Attempt(AttemptKind.REFUSED, "HTTP 429: rate limit reached", retry_after=3600.0)


def test_refusals_asking_past_max_retry_after_stop_the_run_when_heard_again_after_that_wait() -> None:
    streak = LongRefusals()
    # the first wave: each request waits the longest it may (60 s), however many are refused
    for t in (0.0, 0.1, 30.0):
        assert decide(STORM, state(), RULES, rand=0.5, streak=streak, now=t) == Retry(60.0)
    action = decide(STORM, state(), RULES, rand=0.5, streak=streak, now=60.2)
    assert action == StopRun("HTTP 429: rate limit reached: the host refused every request for 60 s, each time "
                             "asking for longer than max_retry_after (60 s), up to 1 h 0 min: its quota looks spent: "
                             "run the same command later")


def test_a_billed_answer_between_long_refusals_starts_the_streak_over() -> None:
    streak = LongRefusals()
    assert decide(STORM, state(), RULES, rand=0.5, streak=streak, now=0.0) == Retry(60.0)
    assert decide(Attempt(AttemptKind.INVALID), state(), RULES, rand=0.5, streak=streak, now=30.0) == Retry(0.0)
    assert decide(STORM, state(), RULES, rand=0.5, streak=streak, now=61.0) == Retry(60.0)
    assert decide(STORM, state(), RULES, rand=0.5, streak=streak, now=100.0) == Retry(60.0)
    assert isinstance(decide(STORM, state(), RULES, rand=0.5, streak=streak, now=121.0), StopRun)


def test_failures_and_short_refusals_neither_end_nor_extend_a_streak_of_long_refusals() -> None:
    streak = LongRefusals()
    decide(STORM, state(), RULES, rand=0.5, streak=streak, now=0.0)
    for t, kind, after in ((10.0, AttemptKind.FAILED, None), (20.0, AttemptKind.TIMEOUT, None),
                           (30.0, AttemptKind.REFUSED, 5.0)):
        assert not isinstance(decide(Attempt(kind, retry_after=after), state(), RULES, rand=0.5, streak=streak,
                                     now=t), StopRun)
    assert streak.refusals == 1
    assert isinstance(decide(STORM, state(), RULES, rand=0.5, streak=streak, now=59.0), StopRun)


def test_a_busy_hosts_retry_after_of_seconds_is_no_spent_quota_even_with_max_retry_after_zero() -> None:
    rules = RetryRules(max_refusals=1000, max_retry_after=0.0)
    streak = LongRefusals()
    busy = Attempt(AttemptKind.REFUSED, "HTTP 429: busy", retry_after=1.0)
    actions = [decide(busy, state(), rules, rand=0.5, streak=streak, now=float(t)) for t in range(0, 600, 5)]
    assert not any(isinstance(a, StopRun) for a in actions)


def test_a_quota_reported_spent_without_a_reset_stops_like_a_long_retry_after_alone() -> None:
    # "x-ratelimit-remaining-requests: 0" with no reset gives no time: only the Retry-After says how long
    reply = read_reply(429, {"Retry-After": "7200", "x-ratelimit-remaining-requests": "0"},
                       b'{"error": {"message": "quota exceeded"}}', now=0.0)
    assert not reply.attempt.quota_spent
    streak = LongRefusals()
    assert decide(reply.attempt, state(), RULES, rand=0.5, streak=streak, now=0.0) == Retry(60.0)
    action = decide(reply.attempt, state(), RULES, rand=0.5, streak=streak, now=60.0)
    assert isinstance(action, StopRun) and "up to 2 h 0 min: its quota looks spent" in action.reason


def test_a_quota_spent_with_a_known_reset_keeps_its_own_words_within_a_streak() -> None:
    streak = LongRefusals()
    decide(STORM, state(), RULES, rand=0.5, streak=streak, now=0.0)
    action = decide(Attempt(AttemptKind.REFUSED, "HTTP 429: capped", 25_500.0, quota_spent=True), state(), RULES,
                    rand=0.5, streak=streak, now=100.0)
    assert isinstance(action, StopRun) and "it resets in 7 h 5 min" in action.reason
