"""What a run works with: policies as sent, shards being filled, tasks, counters and settings."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.records import Policy
from pipeline.tokens import MESSAGE_OVERHEAD


@dataclass(slots=True)
class PolicyPlan:
    """A policy as the run sends it: rendered system message and its fingerprint key."""

    index: int
    policy: Policy
    system: str
    key: bytes
    system_tokens: int
    #: most tokens the content may have (context - system - output budget - template overhead).
    text_budget: int
    #: the policy's version, hashed once (it goes on every label).
    version: str = ""

    def __post_init__(self) -> None:
        self.version = self.version or self.policy.version


@dataclass(slots=True)
class Shard:
    """Labels of input rows [start, start + shard_rows) x policies, filled as answers arrive."""

    index: int
    start: int
    labels: list = field(default_factory=list)
    rows: int = 0
    pending: int = 0
    unsent: int = 0
    closed: bool = False


@dataclass(slots=True)
class Slot:
    """Where one label goes."""

    shard: Shard
    offset: int
    row_id: str
    row_number: int
    input_file: str
    plan: PolicyPlan


@dataclass(slots=True)
class Task:
    fingerprint: bytes
    user: str
    slot: Slot


@dataclass(slots=True)
class RunStats:
    labels: int = 0
    sent: int = 0
    store_hits: int = 0
    duplicates: int = 0
    billed_calls: int = 0
    tokens: int = 0
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    violations: Counter = field(default_factory=Counter)


@dataclass(slots=True)
class RunSettings:
    out_id: str
    run_id: str
    model: str
    reasoning_effort: str
    output_format: str
    concurrency: int
    too_long: str
    max_cost: float | None
    #: dollars earlier runs already spent on this output directory (the cap covers them too).
    spent_before: float
    grace_seconds: float
    shard_rows: int
    #: estimated dollars of one call (for the budget), refined as answers arrive.
    estimate_call_usd: Callable[[PolicyPlan, str, float], float]


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def make_plan(index: int, policy: Policy, *, system: str, key: bytes, system_tokens: int,
              context_tokens: int, max_tokens: int) -> PolicyPlan:
    budget = context_tokens - system_tokens - max_tokens - 4 * MESSAGE_OVERHEAD
    return PolicyPlan(index, policy, system, key, system_tokens, max(budget, 0))
