"""What happens after one attempt: a pure function from (attempt, state) to the next action.

The worker sends, classifies the answer into an `Attempt` (see `pipeline.call.answers`), asks
`decide` what to do, and carries the action out. Nothing here sleeps, reads a clock or draws
a random number: the caller passes ``rand`` so that every rule has an exact test.

Budgets per request (`RetryRules`):
- failures (transport errors, 5xx, broken bodies, upstream errors) count against ``max_attempts``;
- refusals (429, 503, a full queue, 402 with Retry-After) cost nothing and have their own, larger
  budget ``max_refusals``: a busy host is waited for, not given up on;
- billed answers that are not a verdict are retried ``invalid_output_retries`` times; an answer
  cut off by the output cap is retried with a doubled cap up to ``max_tokens_cap``.

One rule looks past the request: `LongRefusals`, the run's refusals that ask for longer than
``max_retry_after`` without a reset to explain them. Heard again after waiting the longest we may,
with nothing answered meanwhile, they are a quota spent until a time the host does not say: the run
stops (resumable) rather than waiting ``max_retry_after`` ``max_refusals`` times over.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pipeline.core.records import Status

__all__ = [
    "Accept", "Action", "Attempt", "AttemptKind", "GiveUp", "LongRefusals", "Poll", "Retry", "RetryRules",
    "RetryState", "StopRun", "backoff_delay", "decide", "quota_stop_reason", "spent_past",
]


class AttemptKind(StrEnum):
    """What one attempt came to, as far as retrying is concerned."""

    ANSWER = "answer"  # a verdict (billed)
    INVALID = "invalid"  # billed, but not a verdict
    TRUNCATED = "truncated"  # billed, the output cap was reached before an answer
    FILTERED = "filtered"  # the host's content filter withheld the answer
    REFUSED = "refused"  # the host asks us to come back later (429, 503, full queue): not billed
    FAILED = "failed"  # a transient failure: 5xx, broken body, upstream error, reset
    TIMEOUT = "timeout"  # no answer within the request timeout
    QUEUED = "queued"  # accepted for later: the answer is to be fetched (ModelsLab "processing")
    ROW_ERROR = "row_error"  # this request will never succeed (400, 413, 422)
    FATAL = "fatal"  # no request will succeed (bad key, no credit, unknown model, wrong URL)


#: kinds that tell the rate control the host is pushing back (they feed the adaptive rate).
PUSHBACK = frozenset({AttemptKind.REFUSED, AttemptKind.TIMEOUT})
#: kinds that count as failures for the circuit breaker.
FAILURES = frozenset({AttemptKind.FAILED, AttemptKind.TIMEOUT})
#: kinds the host billed: it answers, so no quota of the run is spent.
BILLED = frozenset({AttemptKind.ANSWER, AttemptKind.INVALID, AttemptKind.TRUNCATED, AttemptKind.FILTERED})
#: a refusal asking at least this long speaks of a quota, not a busy moment (with ``max_retry_after`` 0,
#: a busy host's "Retry-After: 1" would otherwise count as one).
QUOTA_WAIT_S = 60.0
#: share of ``max_retry_after`` a streak of long refusals must span: the retry that waited it may be
#: woken by a timer a little early.
QUOTA_STREAK_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class Attempt:
    kind: AttemptKind
    #: one line for the row's error column (already free of secrets)
    error: str | None = None
    #: seconds the host asked us to wait (Retry-After, retry-after-ms, a body's retry_after, an eta)
    retry_after: float | None = None
    #: where to fetch a queued answer
    poll_url: str | None = None
    #: the reply reported a quota spent (``x-ratelimit-remaining-*`` at 0) until ``retry_after``
    quota_spent: bool = False


@dataclass(frozen=True, slots=True)
class RetryRules:
    max_attempts: int = 6
    max_refusals: int = 30
    invalid_output_retries: int = 2
    max_tokens_cap: int = 32768
    #: the longest wait a host may ask for; longer requests are cut to this
    max_retry_after: float = 600.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0


@dataclass(slots=True)
class RetryState:
    """Per request: what has been tried so far."""

    max_tokens: int
    attempts: int = 0
    failures: int = 0
    refusals: int = 0
    invalid: int = 0
    #: a queued answer being fetched
    poll_url: str | None = None


@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    after: float


@dataclass(frozen=True, slots=True)
class Poll:
    after: float
    url: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    status: Status
    error: str | None


@dataclass(frozen=True, slots=True)
class StopRun:
    reason: str


Action = Accept | Retry | Poll | GiveUp | StopRun


@dataclass(slots=True)
class LongRefusals:
    """The run's refusals asking for longer than ``max_retry_after`` since its last billed answer.

    One such refusal may be a host's odd header; the request waits ``max_retry_after`` and tries
    again. Refused the same way once that wait has passed (the streak spans it, two refusals at
    least), with nothing billed meanwhile, the host has a quota spent until a time it does not say.
    """

    #: when the streak began (the clock the caller passes), None: no streak
    since: float | None = None
    refusals: int = 0
    #: the longest wait asked during the streak
    longest: float = 0.0

    def spent(self, attempt: Attempt, *, now: float, max_retry_after: float) -> bool:
        """Record ``attempt``; whether the streak now shows a quota spent."""
        if attempt.kind in BILLED:
            self.since, self.refusals, self.longest = None, 0, 0.0
            return False
        asked = attempt.retry_after
        if attempt.kind is not AttemptKind.REFUSED or asked is None or asked <= max(max_retry_after, QUOTA_WAIT_S):
            return False
        if self.since is None:
            self.since = now
        self.refusals += 1
        self.longest = max(self.longest, asked)
        return self.refusals >= 2 and now - self.since >= QUOTA_STREAK_SHARE * max_retry_after

    def stop_reason(self, attempt: Attempt, *, now: float, max_retry_after: float) -> str:
        """"HTTP 429: ...: the host refused every request for 10 min, each time asking for longer than
        max_retry_after (10 min), up to 1 h: its quota looks spent: run the same command later"."""
        lasted = now - (self.since if self.since is not None else now)
        return (f"{attempt.error or 'refused'}: the host refused every request for {_span(lasted)}, each time "
                f"asking for longer than max_retry_after ({_span(max_retry_after)}), up to {_span(self.longest)}: "
                "its quota looks spent: run the same command later")


def spent_past(attempt: Attempt, max_retry_after: float) -> bool:
    """The host reports a quota spent until later than ``max_retry_after``: the run stops on it."""
    return attempt.quota_spent and attempt.retry_after is not None and attempt.retry_after > max_retry_after


def quota_stop_reason(attempt: Attempt, max_retry_after: float) -> str:
    """Why a run stops on a `spent_past` attempt, and what to do: "HTTP 429: ...: the host's quota is
    spent; it resets in 7 h 5 min, longer than max_retry_after (10 min): run the same command after that"."""
    resets = _span(attempt.retry_after or 0.0)
    return (f"{attempt.error or 'refused'}: the host's quota is spent; it resets in {resets}, "
            f"longer than max_retry_after ({_span(max_retry_after)}): run the same command after that")


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0, rand: float) -> float:
    """Seconds before retry number ``attempt`` (1 = first retry): "full jitter".

    A uniform draw in [0, min(cap, base·2^(attempt-1))) spreads the retries of workers that failed
    together (AWS architecture blog, "Exponential backoff and jitter").

    >>> backoff_delay(3, rand=0.5)
    1.0
    """
    exponent = min(max(attempt, 1) - 1, 62)  # 2**62 already dwarfs any cap; avoids float overflow
    return rand * min(cap, base * float(2**exponent))


def decide(attempt: Attempt, state: RetryState, rules: RetryRules, *, rand: float,
           streak: LongRefusals | None = None, now: float = 0.0) -> Action:
    """The next step for a request after ``attempt``; updates ``state``'s counters.

    ``rand`` in [0, 1) draws the backoff jitter. ``streak``: the run's `LongRefusals`, fed with
    every attempt at time ``now``.
    """
    kind = attempt.kind
    state.attempts += 1
    if streak is not None and not spent_past(attempt, rules.max_retry_after) \
            and streak.spent(attempt, now=now, max_retry_after=rules.max_retry_after):
        return StopRun(streak.stop_reason(attempt, now=now, max_retry_after=rules.max_retry_after))
    if kind is AttemptKind.ANSWER:
        return Accept()
    if kind is AttemptKind.FATAL:
        return StopRun(attempt.error or "the endpoint refused the run")
    if kind is AttemptKind.ROW_ERROR:
        return GiveUp(Status.REJECTED, attempt.error)
    if kind is AttemptKind.FILTERED:
        return GiveUp(Status.FILTERED, attempt.error)
    if kind is AttemptKind.TRUNCATED:
        if state.max_tokens < rules.max_tokens_cap:
            state.max_tokens = min(rules.max_tokens_cap, state.max_tokens * 2)
            return Retry(0.0)
        return GiveUp(Status.TRUNCATED, attempt.error)
    if kind is AttemptKind.INVALID:
        state.invalid += 1
        if state.invalid <= rules.invalid_output_retries:
            return Retry(0.0)
        return GiveUp(Status.INVALID_OUTPUT, attempt.error)
    asked = None if attempt.retry_after is None else min(max(attempt.retry_after, 0.0), rules.max_retry_after)
    if kind is AttemptKind.QUEUED and attempt.poll_url:
        state.refusals += 1
        if state.refusals > rules.max_refusals:
            return GiveUp(Status.FAILED, _after(attempt.error or "answer still queued", state))
        state.poll_url = attempt.poll_url
        return Poll(asked if asked is not None else 1.0, attempt.poll_url)
    if kind is AttemptKind.REFUSED:
        if spent_past(attempt, rules.max_retry_after):
            # a daily cap: waiting the most we may, again and again, would only spend the night
            return StopRun(quota_stop_reason(attempt, rules.max_retry_after))
        state.refusals += 1
        if state.refusals > rules.max_refusals:
            return GiveUp(Status.FAILED, _after(attempt.error, state))
        delay = backoff_delay(state.refusals, base=rules.backoff_base, cap=rules.backoff_cap, rand=rand)
        return Retry(delay if asked is None else max(asked, delay * 0.1))
    # FAILED, TIMEOUT (and a QUEUED answer without a place to fetch it)
    state.failures += 1
    if state.failures >= rules.max_attempts:
        return GiveUp(Status.FAILED, _after(attempt.error, state))
    delay = backoff_delay(state.failures, base=rules.backoff_base, cap=rules.backoff_cap, rand=rand)
    return Retry(delay if asked is None else max(asked, delay))


def _span(seconds: float) -> str:
    """A wait in words: "45 s", "12 min", "7 h 5 min".

    >>> _span(0.5), _span(45), _span(720), _span(25_500), _span(1e20)
    ('0.5 s', '45 s', '12 min', '7 h 5 min', 'more than a week')
    """
    if seconds > 7 * 86_400:
        return "more than a week"
    if seconds < 10:
        return f"{round(seconds, 1):g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _after(error: str | None, state: RetryState) -> str:
    return f"{error or 'no usable answer'} (after {state.attempts} attempts)"
