"""Rate control: pure rules (buckets, adaptive rate, circuit breaker, backoff, rate-limit headers,
the decision after an attempt) and `RateControl`, the one object the workers consult.

    decide.py    what to do after one attempt (accept, retry after T, poll, give up, stop the run)
    adaptive.py  a request rate lowered on the share of pushback, recovered additively
    buckets.py   RPM/TPM token buckets and the pauses a host orders
    breaker.py   pause everyone when most recent attempts failed
    headers.py   Retry-After, retry-after-ms, x-ratelimit-* parsing
    control.py   RateControl: acquire before an attempt, after_attempt after it
    throttle.py  Throttle: what workers consult (RateControl, or capacity leased from a shared limiter)
"""

from pipeline.ratecontrol.control import LIMIT_MARGIN, RateControl
from pipeline.ratecontrol.decide import (
    Accept,
    Action,
    Attempt,
    AttemptKind,
    GiveUp,
    Poll,
    Retry,
    RetryRules,
    RetryState,
    StopRun,
    decide,
)
from pipeline.ratecontrol.throttle import Throttle

__all__ = [
    "LIMIT_MARGIN", "Accept", "Action", "Attempt", "AttemptKind", "GiveUp", "Poll", "RateControl", "Retry",
    "RetryRules", "RetryState", "StopRun", "Throttle", "decide",
]
