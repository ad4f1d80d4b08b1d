"""The job a batch file belongs to: reopened exactly as `moderate run` would open it.

Prepare records the job's settings in the output folder's manifest, so ingest (given only the
folder) reopens the same inputs, policies and model, and a later online ``run`` continues it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.call.client import HttpReply
from pipeline.call.judge import Judge
from pipeline.config.providers import run_model
from pipeline.config.rules import validate
from pipeline.config.settings import RunConfig
from pipeline.core.records import Outcome, Status
from pipeline.core.storage import is_uri
from pipeline.core.tokens import fits, truncate
from pipeline.engines.job import call_settings, job_identity, policy_plan
from pipeline.plan.planner import PolicyPlan
from pipeline.plan.policies import builtin_policy_files, format_warnings, load_policies
from pipeline.plan.prompt import fingerprint, neutralise, normalise
from pipeline.readers import InputSet, open_inputs

#: settings that do not describe the job (or are decided again by each command).
_NOT_RECORDED = ("source", "force", "preset")


@dataclass(slots=True)
class Job:
    config: RunConfig
    inputs: InputSet
    plans: list[PolicyPlan]
    identity: dict[str, Any]
    model: str
    #: builds the request bodies exactly as `run` does (it never sends one)
    judge: Judge


class _Offline:
    """The transport of a job whose requests go to a file: nothing is sent from here."""

    async def post(self, body: bytes, *, timeout: float) -> HttpReply:
        raise RuntimeError("batch requests are written to a file, not sent")


@dataclass(slots=True)
class Request:
    """One (row, policy) that needs an answer."""

    plan: PolicyPlan
    fingerprint: bytes
    user: str


def open_job(config: RunConfig) -> Job:
    """Inputs, policy plans and identity, as `moderate run` computes them."""
    inputs = open_inputs(config.inputs, text_column=config.text_column, id_column=config.id_column,
                         limit=config.limit)
    files = config.policies or builtin_policy_files()
    policies = load_policies(files)
    format_warnings(files, policies, config.output_format)  # refuses a marker in a policy sent as written
    model = run_model(config.provider, config.model)
    plans = [policy_plan(i, p, config, model) for i, p in enumerate(policies)]
    judge = Judge(transport=_Offline(), settings=call_settings(config, model=model, api_key=None))
    return Job(config, inputs, plans, job_identity(config, inputs, plans, model), model, judge)


def body(job: Job, plan: PolicyPlan, user: str) -> bytes:
    """The request body `run` sends for this text and policy (no API key: a batch file is shared)."""
    return job.judge.body(plan.system, user, job.config.max_tokens)


def row_work(job: Job, text: str | None, error: str | None) -> Iterator[Request | Outcome]:
    """Per policy: the request to make, or the outcome a row gets without one (as `run` decides)."""
    user = None if error or text is None else neutralise(normalise(text))
    for plan in job.plans:
        if error is not None:
            yield Outcome(Status.INPUT_ERROR, error=error)
        elif not user:
            yield Outcome(Status.SKIPPED_EMPTY)
        else:
            sent = user
            if not fits(sent, plan.text_budget):
                if job.config.too_long == "skip":
                    yield Outcome(Status.TOO_LONG, error=f"content over {plan.text_budget} tokens")
                    continue
                sent = truncate(sent, plan.text_budget)
            yield Request(plan, fingerprint(plan.key, sent), sent)


def record(config: RunConfig) -> dict[str, Any]:
    """The job's settings for the manifest: local paths made absolute; never a secret (none is in a config)."""
    data = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_RECORDED}
    data["output_format"] = config.output_format.value
    data["inputs"] = [p if is_uri(p) else os.path.abspath(p) for p in config.inputs]
    data["policies"] = [p if not os.path.exists(p) else os.path.abspath(p) for p in config.policies]
    if config.store and config.store != "none":
        data["store"] = os.path.abspath(config.store)
    return data


def restore(data: dict[str, Any], *, out: str) -> RunConfig:
    """The config `record` saved, for the output folder ``out``."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    config = RunConfig(**{k: v for k, v in data.items() if k in names})
    config.preset = set()  # the values were resolved when recorded: keep them as they are
    config.out = out
    config.source = f"{out}/manifest.json"
    validate(config)
    return config
