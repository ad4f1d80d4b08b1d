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
from pipeline.call.router import Route, Router
from pipeline.config.providers import HOSTS, run_model
from pipeline.config.rules import check_context_room
from pipeline.config.settings import EndpointSpec, RunConfig
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
from pipeline.ratecontrol.stragglers import StragglerWatch
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
    #: [[endpoints]]: each endpoint's key and price, by name
    api_keys: dict[str, str | None] = field(default_factory=dict)
    prices: dict[str, Pricing] = field(default_factory=dict)


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
    api_keys, prices = {}, {}
    for spec in config.endpoints:
        api_keys[spec.name] = os.environ.get(spec.api_key_env) or None
        if api_keys[spec.name] is None and HOSTS[spec.provider].needs_key and transport is None:
            raise UsageError(f"no API key for endpoint '{spec.name}': set the environment variable {spec.api_key_env}")
        prices[spec.name] = endpoint_pricing(config, spec)
    if config.endpoints:
        api_key = api_keys[config.endpoints[0].name]
    plans = [policy_plan(i, p, config, model) for i, p in enumerate(policies)]
    check_context_room(config, {p.policy.name: p.system_tokens for p in plans})
    return Job(config, inputs, plans, pricing, model, api_key, warnings, api_keys, prices)


def endpoint_pricing(config: RunConfig, spec: EndpointSpec) -> Pricing:
    """An endpoint's price: its own in [[endpoints]], else [pricing], else the table for its provider."""
    def pick(own: float | None, run: float | None) -> float | None:
        return own if own is not None else run

    model = run_model(spec.provider, spec.model or "")
    return lookup_pricing(provider=spec.provider, model=model,
                          input_per_million=pick(spec.input_per_million, config.input_per_million),
                          cached_input_per_million=pick(spec.cached_input_per_million,
                                                        config.cached_input_per_million),
                          output_per_million=pick(spec.output_per_million, config.output_per_million))


def call_settings(config: RunConfig, *, model: str, api_key: str | None, provider: str | None = None) -> CallSettings:
    """What every request of this job carries (the body and the call), as `run` sends it (to the endpoint
    of ``provider`` when it is not the run's)."""
    provider = provider or config.provider
    provider = "openai" if provider == "simulator" else provider
    structured = response_format(config.output_format) if config.response_format == "json_schema" else None
    return CallSettings(
        provider=provider, model=model, reasoning_effort=config.reasoning_effort, max_tokens=config.max_tokens,
        request_timeout=config.request_timeout, keep_reasoning=config.keep_reasoning, api_key=api_key,
        response_format=structured, read_verdict=policy_labels(config))


def build_run(config: RunConfig, *, inputs: InputSet, plans: list[PolicyPlan], endpoint: Endpoint | list[Endpoint],
              store: ResultStore, outdir: OutputDir, manifest: Manifest, pricing: Pricing, api_key: str | None,
              model: str, log: RunLog, progress: Progress | None, sample: Callable[[int], bool] | None = None,
              canaries: list[tuple[int, int, str]] | None = None, control: Throttle | None = None,
              run_id: str | None = None, first_row: int = 0, manifest_file: bool = True,
              job: Job | None = None) -> Run:
    """A `Run` of ``config``; a cluster worker passes its leased ``control``, the run's id and its shard.
    ``endpoint``: the one endpoint, or those of [[endpoints]] (with the ``job`` holding their keys and prices)."""
    if isinstance(endpoint, list):
        router = _routes(config, endpoint, job, model=model, log=log)
        pricing = max((r.pricing for r in router.routes), key=lambda p: p.input_per_million + p.output_per_million)
    else:
        judge = Judge(transport=endpoint.transport, settings=call_settings(config, model=model, api_key=api_key))
        if control is None:
            control = _rate_control(config, log, rpm=config.rpm, tpm=config.tpm, name=None)
        router = Router([Route(endpoint.name or config.provider, judge, control, pricing, config.concurrency,
                               gate=endpoint.gate, watch=_watch(endpoint),
                               cached_count_toward_tpm=HOSTS[config.provider].cached_tokens_count_toward_tpm)])
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
    return Run(inputs=inputs, plans=plans, router=router, rules=rules, pricing=pricing,
               budget=Budget(config.max_cost, spent=spent), store=store, outdir=outdir, manifest=manifest,
               settings=settings, progress=progress, sample=sample, canaries=canaries or (),
               manifest_file=manifest_file)


def _watch(endpoint: Endpoint) -> StragglerWatch | None:
    return StragglerWatch(cap=endpoint.stragglers) if endpoint.stragglers else None


def _routes(config: RunConfig, endpoints: list[Endpoint], job: Job | None, *, model: str, log: RunLog) -> Router:
    """One route per [[endpoints]] entry: its own judge, rate control, breaker, gate, price and pool."""
    routes = []
    for endpoint in endpoints:
        spec = endpoint.spec
        assert spec is not None and job is not None, "[[endpoints]] come with their specs and the job"
        key = job.api_keys.get(spec.name)
        # the run's model names the cache fingerprint; each host is sent its own id for it
        own_model = model if spec.provider == "simulator" and "simulator" in model else spec.model or model
        judge = Judge(transport=endpoint.transport,
                      settings=call_settings(config, model=own_model, api_key=key, provider=spec.provider))
        control = _rate_control(config, log, rpm=spec.rpm, tpm=spec.tpm, name=spec.name)
        host = HOSTS[spec.provider]
        routes.append(Route(spec.name, judge, control, job.prices[spec.name], spec.concurrency or 1,
                            gate=endpoint.gate, weight=spec.weight, self_hosted=not host.needs_key,
                            watch=_watch(endpoint), cached_count_toward_tpm=host.cached_tokens_count_toward_tpm))

    def on_change(route: Route, line: str) -> None:
        log.say("endpoint", f"moderate: endpoint {route.name}: {line}", endpoint=route.name)

    return Router(routes, on_change=on_change)


def _rate_control(config: RunConfig, log: RunLog, *, rpm: float | None, tpm: float | None,
                  name: str | None) -> RateControl:
    """The rules of one endpoint's rate: buckets, the host's pauses, the adaptive rate and the breaker."""
    where = f"endpoint {name}: " if name else ""

    def on_pause(seconds: float, why: str) -> None:  # one line each, terminal or not
        log.say("pause", f"moderate: {where}pausing all requests for {seconds:.0f} s: {why}",
                seconds=round(seconds, 1), reason=why)

    def on_long_retry(seconds: float, why: str) -> None:
        log.say("pause", f"moderate: {where}requests wait up to {seconds:.0f} s before their retry: {why}",
                seconds=round(seconds, 1), reason=why)

    return RateControl(rpm=rpm or None, tpm=tpm or None, adaptive=config.adaptive, margin=LIMIT_MARGIN,
                       max_retry_after=config.max_retry_after, on_pause=on_pause, on_long_retry=on_long_retry)


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
