"""What a run would send and cost, counted offline: rows, requests, exact prompt tokens per policy.

The input is streamed once, with the run's own rules: text normalised and neutralised
(`pipeline.plan.prompt`), empty texts skipped, texts over the context budget skipped or truncated,
identical texts sent once (a 64-bit prefix of the run's fingerprint, kept in a `DigestSet`).
Prompt tokens are exact: o200k counts of the content plus the Harmony template and the policy
(`pipeline.core.tokens.harmony_prompt_tokens`). Nothing is sent anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from pipeline.config.providers import run_model
from pipeline.config.settings import RunConfig
from pipeline.core.digests import DigestSet
from pipeline.core.tokens import count_tokens, harmony_overhead, policy_tokens, truncate
from pipeline.plan.policies import builtin_policy_dir, load_policies
from pipeline.plan.prompt import fingerprint, neutralise, normalise, render_system, request_key
from pipeline.readers import RowBatch, open_inputs

BATCH_ROWS = 4096


@dataclass(slots=True)
class PolicyCount:
    """One policy's share of the job: the calls it needs and their prompt tokens."""

    name: str
    #: tokens of the policy as the developer message, and of the rest of the template.
    system_tokens: int
    overhead: int
    #: most tokens a content may have (context - template - policy - output budget).
    text_budget: int
    requests: int = 0
    content_tokens: int = 0
    too_long: int = 0
    truncated: int = 0
    _truncated_seen: set[bytes] = field(default_factory=set)

    @property
    def prefix_tokens(self) -> int:
        """Prompt tokens every request of this policy carries besides the content."""
        return self.system_tokens + self.overhead

    @property
    def prompt_tokens(self) -> int:
        return self.content_tokens + self.requests * self.prefix_tokens


@dataclass(slots=True)
class JobCount:
    """Rows of the input as the run would see them, and the policies' counts."""

    policies: list[PolicyCount]
    rows: int = 0
    skipped_empty: int = 0
    input_errors: int = 0
    #: rows whose text an earlier row already had (each policy sends it once).
    duplicates: int = 0
    unique_texts: int = 0
    digest_bytes: int = 0


def job_model(config: RunConfig) -> str:
    """The model name the run sends (the simulator serves its own name)."""
    return run_model(config.provider, config.model)


def count_job(config: RunConfig, *, date: str | None = "today") -> JobCount:
    """Stream the job's input once and count what `moderate run` would send.

    Raises `InputError` / `PolicyError` (one line) for unreadable inputs or policies.
    """
    inputs = open_inputs(config.inputs, text_column=config.text_column, id_column=config.id_column,
                         limit=config.limit)
    policies = load_policies(config.policies or sorted(builtin_policy_dir().glob("*.md")))
    model = job_model(config)
    counts: list[PolicyCount] = []
    keys: list[bytes] = []
    for policy in policies:
        system = render_system(policy, config.output_format)
        keys.append(request_key(model=model, system=system, reasoning_effort=config.reasoning_effort,
                                output_format=config.output_format))
        tokens = policy_tokens(system)
        overhead = harmony_overhead(config.reasoning_effort, _date(date))
        budget = max(config.context_tokens - config.max_tokens - tokens - overhead, 0)
        counts.append(PolicyCount(policy.name, tokens, overhead, budget))
    job = JobCount(counts)
    counter = _Counter(job, keys[0] if keys else b"", keys, too_long=config.too_long)
    counter.feed(inputs.batches(batch_size=BATCH_ROWS))
    job.unique_texts = len(counter.seen)
    job.digest_bytes = counter.seen.nbytes
    return job


class _Counter:
    """The streaming part: one batch at a time, memory bounded by the digest set."""

    def __init__(self, job: JobCount, key: bytes, keys: list[bytes], *, too_long: str) -> None:
        self.job = job
        self.key = key
        self.keys = keys
        self.too_long = too_long
        self.seen = DigestSet()
        #: token counts of texts over some policy's budget (rare), for their duplicates' statuses.
        self.long_texts: dict[bytes, int] = {}
        self.min_budget = min((p.text_budget for p in job.policies), default=0)
        #: distinct texts that fit every policy's budget, and their tokens.
        self.fitting = 0
        self.fitting_tokens = 0

    def feed(self, batches: Iterable[RowBatch]) -> None:
        for batch in batches:
            self.add(batch)
        for policy in self.job.policies:
            policy.requests += self.fitting
            policy.content_tokens += self.fitting_tokens

    def add(self, batch: RowBatch) -> None:
        job = self.job
        job.rows += len(batch.texts)
        errors = batch.errors
        users: list[str] = []
        for i, text in enumerate(batch.texts):
            if errors is not None and errors[i] is not None:
                job.input_errors += 1
                continue
            user = neutralise(normalise(text)) if text else ""
            if not user:
                job.skipped_empty += 1
                continue
            users.append(user)
        if not users:
            return
        key = self.key
        digests = [fingerprint(key, user)[:8] for user in users]
        fresh = self.seen.add(np.frombuffer(b"".join(digests), dtype=np.uint64))
        policies = job.policies
        for user, digest, new in zip(users, digests, fresh.tolist(), strict=True):
            if not new:
                job.duplicates += 1
                long_tokens = self.long_texts.get(digest)
                if long_tokens is not None:
                    for policy in policies:
                        if long_tokens > policy.text_budget and self.too_long == "skip":
                            policy.too_long += 1
                continue
            tokens = count_tokens(user)
            if tokens <= self.min_budget:  # fits every policy: added to all of them in `finish`
                self.fitting += 1
                self.fitting_tokens += tokens
                continue
            self.long_texts[digest] = tokens
            for index, policy in enumerate(policies):
                if tokens <= policy.text_budget:
                    policy.requests += 1
                    policy.content_tokens += tokens
                elif self.too_long == "skip":
                    policy.too_long += 1
                else:
                    self._truncate(policy, self.keys[index], user)

    def _truncate(self, policy: PolicyCount, key: bytes, user: str) -> None:
        policy.truncated += 1
        sent = truncate(user, policy.text_budget)
        fp = fingerprint(key, sent)
        if fp not in policy._truncated_seen:  # two long texts may share their first N tokens
            policy._truncated_seen.add(fp)
            policy.requests += 1
            policy.content_tokens += count_tokens(sent)


def _date(date: str | None) -> str | None:
    if date != "today":
        return date
    import time

    return time.strftime("%Y-%m-%d", time.gmtime())
