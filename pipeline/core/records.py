"""The small data model shared by every stage: policies, verdicts, usage, statuses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum


class OutputFormat(StrEnum):
    """The three answer formats of the gpt-oss-safeguard guide, and the policy's own."""

    BINARY = "binary"  # a single character: 0 or 1
    CATEGORY = "category"  # {"violation": 1, "policy_category": "H2.f"}
    RATIONALE = "rationale"  # category + rule_ids + confidence + rationale
    POLICY = "policy"  # the policy's own label format, read with the run's label and violation patterns


#: the formats whose answer instructions we write into the policy (the guide's three)
ANSWER_FORMATS = (OutputFormat.BINARY, OutputFormat.CATEGORY, OutputFormat.RATIONALE)


class Status(StrEnum):
    """What happened to one (row, policy) pair. Every pair ends with exactly one."""

    OK = "ok"
    SKIPPED_EMPTY = "skipped_empty"  # null, empty or whitespace-only text: no request
    TOO_LONG = "too_long"  # over the context budget: no request
    INPUT_ERROR = "input_error"  # the input line itself could not be read (bad JSON)
    INVALID_OUTPUT = "invalid_output"  # billed answer that is not a verdict (junk, refusal)
    TRUNCATED = "truncated"  # finish_reason "length" with no usable answer
    REJECTED = "rejected"  # the endpoint refused this one row (HTTP 400/413/422)
    FILTERED = "filtered"  # the host's content filter withheld the answer (finish_reason content_filter)
    FAILED = "failed"  # transport errors until the attempts ran out
    BUDGET_EXHAUSTED = "budget_exhausted"  # not sent: --max-cost reached
    INTERRUPTED = "interrupted"  # not sent: the run was stopped by a signal
    ABORTED = "aborted"  # not sent: a fatal endpoint error stopped the run
    BATCH_MISSING = "batch_missing"  # prepared for a batch file, no result line came back
    BATCH_FAILED = "batch_failed"  # the batch result line is an error or not a verdict (not cached)


#: statuses whose answer depends only on the request, so a stored one is reused forever.
FINAL_STATUSES = frozenset({Status.OK, Status.INVALID_OUTPUT, Status.TRUNCATED, Status.REJECTED})
#: statuses of rows that were never sent because the run stopped early.
UNSENT_STATUSES = frozenset({Status.BUDGET_EXHAUSTED, Status.INTERRUPTED, Status.ABORTED, Status.BATCH_MISSING,
                             Status.BATCH_FAILED})


@dataclass(slots=True, frozen=True)
class Policy:
    """A written policy. Its name is the file stem, its version a hash of its text."""

    name: str
    text: str

    @property
    def version(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]


@dataclass(slots=True)
class Verdict:
    """A parsed answer of the model."""

    violation: int
    category: str | None = None
    rule_ids: tuple[str, ...] = ()
    confidence: str | None = None
    rationale: str | None = None


@dataclass(slots=True)
class Usage:
    """Token counts as billed by the server (summed over every billed attempt)."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    #: True when the server sent no usage and the counts are our estimate.
    estimated: bool = False
    #: cost the server itself reported (OpenRouter), summed; None when none reported.
    server_cost_usd: float | None = None

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.estimated = self.estimated or other.estimated
        if other.server_cost_usd is not None:
            self.server_cost_usd = (self.server_cost_usd or 0.0) + other.server_cost_usd


@dataclass(slots=True)
class Outcome:
    """The result of judging one text under one policy (what the result store keeps)."""

    status: Status
    verdict: Verdict | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 0
    #: answers that carried usage (what the host charged for), retries included.
    billed_calls: int = 0
    finish_reason: str | None = None
    error: str | None = None
    #: the model's text when it was not a verdict (kept for audit).
    raw_output: str | None = None
    #: the model's reasoning, only when the run asks to keep it.
    reasoning: str | None = None
    #: the model name the server reported.
    served_model: str | None = None
    #: the upstream provider that served the answer (OpenRouter routes to several).
    provider: str | None = None
    #: the run's endpoint that took the last attempt (its name in [[endpoints]], else the provider).
    endpoint: str | None = None
