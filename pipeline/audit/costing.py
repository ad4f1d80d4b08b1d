"""The estimate of a job as data: rows, requests, exact prompt tokens, output tokens and cost ranges, time.

What ``moderate estimate`` prints, and ``pipeline.estimate(config)`` returns (keys: docs/audit.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.audit.estimate import JobCount, count_job, job_model
from pipeline.audit.projection import (
    ANSWER_TOKENS,
    ASSUMED_REASONING,
    OutputTokens,
    assumed_output,
    calibrated_output,
    project,
    seconds_at_limits,
)
from pipeline.config.settings import RunConfig
from pipeline.core.cost import lookup_pricing
from pipeline.core.errors import UserError
from pipeline.core.storage import StorageSettings, configure
from pipeline.output.reader import open_for_reading

__all__ = ["EstimateError", "estimate", "read_calibration"]


class EstimateError(UserError):
    """A one-line user mistake (bad --calibrate directory)."""


def estimate(config: RunConfig, *, calibrate: str | None = None, date: str | None = "today") -> dict[str, Any]:
    """The estimate as a JSON-ready dict (see `docs/audit.md` for the keys)."""
    model = job_model(config)
    pricing = lookup_pricing(provider=config.provider, model=model, input_per_million=config.input_per_million,
                             cached_input_per_million=config.cached_input_per_million,
                             output_per_million=config.output_per_million)
    configure(StorageSettings(config.storage_endpoint_url, config.storage_timeout, config.storage_lock))
    calibration = read_calibration(calibrate) if calibrate else None
    job = count_job(config, date=date)
    per_policy: dict[str, Any] = {}
    totals = {"requests": 0, "prompt_tokens": 0, "completion": [0.0, 0.0, 0.0], "cost": [0.0, 0.0, 0.0]}
    for policy in job.policies:
        output = _output_tokens(policy.name, config, calibration)
        p = project(requests=policy.requests, prompt_tokens=policy.prompt_tokens,
                    prefix_tokens=policy.prefix_tokens, output=output, pricing=pricing)
        per_policy[policy.name] = {
            "rows": job.rows, "requests": p.requests, "prompt_tokens": p.prompt_tokens,
            "prompt_tokens_per_request_besides_content": policy.prefix_tokens,
            "too_long": policy.too_long, "truncated": policy.truncated,
            "completion_tokens": _range(p.completion_tokens, 0), "cost_usd": round(p.cost_usd[1], 6),
            "cost_usd_range": _range(p.cost_usd, 6), "output_tokens_per_request": _range(output.as_tuple(), 1),
            "output_tokens_source": output.source,
            "seconds": _seconds(p.requests, p.prompt_tokens, p.completion_tokens, config),
        }
        totals["requests"] += p.requests
        totals["prompt_tokens"] += p.prompt_tokens
        for i in range(3):
            totals["completion"][i] += p.completion_tokens[i]
            totals["cost"][i] += p.cost_usd[i]
    seconds = _seconds(totals["requests"], totals["prompt_tokens"], totals["completion"], config)
    return {
        "rows": job.rows,
        "labels": job.rows * len(job.policies),
        "requests": totals["requests"],
        "prompt_tokens": totals["prompt_tokens"],
        "completion_tokens": _range(totals["completion"], 0),
        "cost_usd": round(totals["cost"][1], 6),
        "cost_usd_range": _range(totals["cost"], 6),
        "seconds": seconds,
        **_row_counts(job),
        "provider": config.provider, "model": model, "reasoning_effort": config.reasoning_effort,
        "output_format": config.output_format.value, "rpm": config.rpm, "tpm": config.tpm,
        "pricing": pricing.as_dict(),
        "calibrated_from": calibrate,
        "assumed_output_tokens": {effort: dict(zip(("low", "expected", "high"), values, strict=True))
                                  for effort, values in ASSUMED_REASONING.items()},
        "answer_tokens": ANSWER_TOKENS,
        "policies": per_policy,
    }


def read_calibration(out: str | Path) -> dict[str, Any]:
    """Measured completion tokens per request of a finished run, per policy and overall.

    ``out``: a local folder or an object-store URI (``s3://bucket/out``).
    """
    with open_for_reading(out) as folder:
        report = folder.read_cost_report(missing="--calibrate needs a finished run's directory")
    if not _counts(report):
        raise EstimateError(f"{folder.where('cost_report.json')}: not a run's cost report (no numbers of requests "
                            "and completion tokens)")
    if not report["requests"]:
        raise EstimateError(f"{folder}: the run made no billed request; nothing to calibrate from")
    per_policy = report.get("per_policy")
    report["per_policy"] = {name: p for name, p in per_policy.items() if isinstance(p, dict) and _counts(p)} \
        if isinstance(per_policy, dict) else {}
    return report


def _counts(report: dict[str, Any]) -> bool:
    return all(isinstance(report.get(k), (int, float)) and not isinstance(report.get(k), bool) and report[k] >= 0
               for k in ("requests", "completion_tokens"))


def _output_tokens(policy: str, config: RunConfig, calibration: dict[str, Any] | None) -> OutputTokens:
    if calibration is None:
        return assumed_output(config.reasoning_effort, config.output_format.value)
    measured = calibration.get("per_policy", {}).get(policy) or {}
    if measured.get("requests"):
        return calibrated_output(measured["completion_tokens"], measured["requests"],
                                 f"measured on policy {policy}")
    return calibrated_output(calibration["completion_tokens"], calibration["requests"],
                             "measured on all policies of the run")


def _seconds(requests: int, prompt_tokens: int, completion: Any, config: RunConfig) -> dict[str, float] | None:
    """Time at the configured limits for each of (low, expected, high) output; None without limits."""
    seconds = [seconds_at_limits(requests=requests, tokens=prompt_tokens + c, rpm=config.rpm, tpm=config.tpm)
               for c in completion]
    return None if seconds[1] is None else _range(seconds, 1)


def _row_counts(job: JobCount) -> dict[str, Any]:
    return {"policy_count": len(job.policies), "skipped_empty": job.skipped_empty,
            "input_errors": job.input_errors, "duplicates": job.duplicates, "unique_texts": job.unique_texts,
            "digest_set_bytes": job.digest_bytes}


def _range(values: Any, digits: int) -> dict[str, float]:
    low, expected, high = values
    return {"low": round(low, digits), "expected": round(expected, digits), "high": round(high, digits)}
