"""A job before it runs: checked inputs, policies, prices and key; how its requests are planned and
sent; and the `Run` that carries it out. Shared by `run`, the batch commands and the Ray engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.call.client import Transport
from pipeline.call.endpoints import Endpoint
from pipeline.call.judge import CallSettings, Judge
from pipeline.call.parser import PolicyLabels
from pipeline.config.providers import HOSTS, run_model
from pipeline.config.rules import check_context_room
from pipeline.config.settings import RunConfig
from pipeline.core.cost import Pricing, lookup_pricing
from pipeline.core.errors import UserError
from pipeline.core.labels import COLUMN_NAMES
from pipeline.core.records import OutputFormat, Policy
from pipeline.core.storage import StorageSettings, configure
from pipeline.core.tokens import MESSAGE_OVERHEAD, quick_estimate
from pipeline.engines.local.runner import Run
from pipeline.engines.progress import Progress
from pipeline.engines.runlog import RunLog
from pipeline.engines.runstate import RunSettings, new_run_id
from pipeline.output.outdir import Manifest, OutputDir
from pipeline.output.store import ResultStore
from pipeline.plan.planner import PolicyPlan, make_policy_plan
from pipeline.plan.policies import builtin_policy_files, format_warnings, load_policies
from pipeline.plan.prompt import PROMPT_VERSION, render_system, request_key
from pipeline.plan.schemas import response_format
from pipeline.ratecontrol import LIMIT_MARGIN, RateControl, RetryRules, Throttle
from pipeline.ratecontrol.budget import Budget
from pipeline.readers import InputSet, open_inputs

__all__ = ["Job", "UsageError", "build_run", "call_settings", "job_identity", "open_job", "policy_plan",
           "worker_count"]


class UsageError(UserError):
    """A one-line user mistake found before anything is sent."""


@dataclass(slots=True)
class Job:
    """What a run needs before anything is opened: checked inputs, policies, prices, model, key."""

    config: RunConfig
    inputs: InputSet
    plans: list[PolicyPlan]
    pricing: Pricing
    model: str
    api_key: str | None
    #: one-line warnings about the job, said before it starts (a policy with two answer formats)
    warnings: list[str] = field(default_factory=list)


def open_job(config: RunConfig, *, transport: Transport | None = None) -> Job:
    """Check the inputs, policies, prices and key of a job; raises the one-line errors of a user mistake."""
    if not config.inputs:
        raise UsageError("no input: pass --input PATH (file, folder or glob) or set [input] paths")
    configure(StorageSettings(config.storage_endpoint_url, config.storage_timeout, config.storage_lock))
    if clash := sorted(COLUMN_NAMES.intersection(config.keep_columns)):
        raise UsageError(f"--keep-columns: {', '.join(clash)} is a label column already (docs/output.md)")
    inputs = open_inputs(config.inputs, text_column=config.text_column, id_column=config.id_column,
                         limit=config.limit, keep_columns=config.keep_columns)
    files = config.policies or builtin_policy_files()
    policies = load_policies(files)
    warnings = format_warnings(files, policies, config.output_format)
    model = run_model(config.provider, config.model)
    pricing = lookup_pricing(provider=config.provider, model=model, input_per_million=config.input_per_million,
                             cached_input_per_million=config.cached_input_per_million,
                             output_per_million=config.output_per_million)
    api_key = os.environ.get(config.api_key_env) or None
    if api_key is None and HOSTS[config.provider].needs_key and transport is None:
        raise UsageError(f"no API key: set the environment variable {config.api_key_env}")
    plans = [policy_plan(i, p, config, model) for i, p in enumerate(policies)]
    check_context_room(config, {p.policy.name: p.system_tokens for p in plans})
    return Job(config, inputs, plans, pricing, model, api_key, warnings)


def call_settings(config: RunConfig, *, model: str, api_key: str | None) -> CallSettings:
    """What every request of this job carries (the body and the call), as `run` sends it."""
    provider = "openai" if config.provider == "simulator" else config.provider
    structured = response_format(config.output_format) if config.response_format == "json_schema" else None
    return CallSettings(
        provider=provider, model=model, reasoning_effort=config.reasoning_effort, max_tokens=config.max_tokens,
        request_timeout=config.request_timeout, keep_reasoning=config.keep_reasoning, api_key=api_key,
        response_format=structured, read_verdict=policy_labels(config))


def build_run(config: RunConfig, *, inputs: InputSet, plans: list[PolicyPlan], endpoint: Endpoint,
              store: ResultStore, outdir: OutputDir, manifest: Manifest, pricing: Pricing, api_key: str | None,
              model: str, log: RunLog, progress: Progress | None, sample: Callable[[int], bool] | None = None,
              canaries: list[tuple[int, int, str]] | None = None, control: Throttle | None = None,
              run_id: str | None = None, first_row: int = 0, manifest_file: bool = True) -> Run:
    """A `Run` of ``config``; a cluster worker passes its leased ``control``, the run's id and its shard."""
    judge = Judge(transport=endpoint.transport, settings=call_settings(config, model=model, api_key=api_key))

    def on_pause(seconds: float, why: str) -> None:  # one line each, terminal or not
        log.say("pause", f"moderate: pausing all requests for {seconds:.0f} s: {why}", seconds=round(seconds, 1),
                reason=why)

    def on_long_retry(seconds: float, why: str) -> None:
        log.say("pause", f"moderate: requests wait up to {seconds:.0f} s before their retry: {why}",
                seconds=round(seconds, 1), reason=why)

    if control is None:
        control = RateControl(rpm=config.rpm or None, tpm=config.tpm or None, adaptive=config.adaptive,
                              margin=LIMIT_MARGIN, max_retry_after=config.max_retry_after, on_pause=on_pause,
                              on_long_retry=on_long_retry)
    rules = RetryRules(max_attempts=config.max_attempts, max_refusals=config.max_refusals,
                       invalid_output_retries=config.invalid_output_retries,
                       max_tokens_cap=config.max_tokens_cap, max_retry_after=config.max_retry_after)
    billing = store.billing(manifest.out_id)
    spent = sum(b["cost_usd"] if b.get("charged_usd") is None else b["charged_usd"] for b in billing)
    spent += manifest.earlier_stores_usd  # spent through another store: still the directory's
    settings = RunSettings(
        out_id=manifest.out_id, run_id=run_id or new_run_id(), model=model, reasoning_effort=config.reasoning_effort,
        output_format=config.output_format.value, too_long=config.too_long,
        concurrency=worker_count(config.concurrency, inputs.total_rows, len(plans)),
        max_tokens=config.max_tokens, keep_reasoning=config.keep_reasoning, grace_seconds=config.grace_seconds,
        shard_rows=manifest.shard_rows, first_row=first_row,
    )
    run = Run(inputs=inputs, plans=plans, judge=judge, control=control, rules=rules, pricing=pricing,
              budget=Budget(config.max_cost, spent=spent), store=store, outdir=outdir, manifest=manifest,
              settings=settings, progress=progress, sample=sample, canaries=canaries or (),
              manifest_file=manifest_file)
    run.dispatcher.gate = endpoint.gate
    run.dispatcher.cached_count_toward_tpm = HOSTS[config.provider].cached_tokens_count_toward_tpm
    return run


def worker_count(concurrency: int, rows: int | None, policies: int) -> int:
    """As many workers as connections, but never more than there are requests to make.

    >>> worker_count(100_000, 5, 2)
    10
    """
    if rows is None:
        return concurrency
    return max(1, min(concurrency, rows * policies))


def policy_plan(index: int, policy: Policy, config: RunConfig, model: str) -> PolicyPlan:
    system = render_system(policy, config.output_format)
    key = request_key(model=model, system=system, reasoning_effort=config.reasoning_effort,
                      output_format=config.output_format, structured=config.response_format == "json_schema",
                      patterns=answer_patterns(config))
    return make_policy_plan(index, policy, system=system, key=key,
                            system_tokens=quick_estimate(system) + MESSAGE_OVERHEAD,
                            context_tokens=config.context_tokens, max_tokens=config.max_tokens)


def policy_labels(config: RunConfig) -> PolicyLabels | None:
    """What reads answers in the policy's own format; None for our formats (`parse_verdict`)."""
    patterns = answer_patterns(config)
    return None if patterns is None else PolicyLabels.from_patterns(*patterns)


def answer_patterns(config: RunConfig) -> tuple[str, str] | None:
    """The (label, violation) patterns that read answers in the policy's own format; None for our formats."""
    if config.output_format is not OutputFormat.POLICY:
        return None
    return config.label_pattern or "", config.violation_pattern or ""


def job_identity(config: RunConfig, inputs: InputSet, plans: list[PolicyPlan], model: str) -> dict:
    """What makes an output directory: resuming with anything else would mix two jobs."""
    identity = {
        "input": inputs.identity(),
        "limit": config.limit,
        "policies": [f"{p.policy.name}@{p.policy.version}" for p in plans],
        "model": model,
        "reasoning_effort": config.reasoning_effort,
        "output_format": config.output_format.value,
        "prompt_version": PROMPT_VERSION,
    }
    if config.response_format != "text":  # absent by default, so existing directories still resume
        identity["response_format"] = config.response_format
    if config.keep_columns:  # the shards' columns
        identity["keep_columns"] = config.keep_columns
    if (patterns := answer_patterns(config)) is not None:  # how answers become labels
        identity["patterns"] = list(patterns)
    if config.sample is not None:  # another sample is another job
        identity["sample"] = {"sample": config.sample, "seed": config.seed}
    return identity


def job_description(config: RunConfig, inputs: InputSet, plans: list[PolicyPlan], model: str) -> dict:
    """What an output folder says about itself, so `export`, `eval` and `report` need no flag repeated."""
    return {
        "inputs": [f.path if "://" in f.path else os.path.abspath(f.path) for f in inputs.files],
        "text_column": config.text_column,
        "id_column": config.id_column,
        "keep_columns": config.keep_columns,
        "model": model,
        "provider": config.provider,
        "reasoning_effort": config.reasoning_effort,
        "output_format": config.output_format.value,
        **({"label_pattern": config.label_pattern, "violation_pattern": config.violation_pattern}
           if config.output_format is OutputFormat.POLICY else {}),
        "policies": {p.policy.name: {"version": p.policy.version, "text": p.policy.text} for p in plans},
    }
