"""`moderate estimate`: rows, requests, tokens, cost and time of a job before it runs (no network)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

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
from pipeline.config.settings import ConfigError, RunConfig
from pipeline.core import exitcodes
from pipeline.core.cost import PricingError, lookup_pricing
from pipeline.core.errors import UserError
from pipeline.plan.policies import PolicyError
from pipeline.readers import InputError

DESCRIPTION = """\
Count what `moderate run` would send for the same config and flags, without sending anything:
rows, requests (identical texts once, empty and too-long texts skipped), exact prompt tokens
(o200k + the gpt-oss Harmony template), projected output tokens and cost (low-expected-high), and
the time it takes at the configured --rpm/--tpm."""


class EstimateError(UserError):
    """A one-line user mistake (bad --calibrate directory)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calibrate", metavar="OUT_DIR",
                        help="use the output tokens per request measured by a finished run in OUT_DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def main(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from pipeline.cli.jobflags import job_config

    # one pass over the input: freed Parquet buffers go back to the system at once (mimalloc,
    # pyarrow's default, keeps them: ~40 MB more peak on a 1 M-row file)
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        config = job_config(args)
        if not config.inputs:
            raise ConfigError("no input: pass --input PATH (file, folder or glob) or set [input] paths")
        result = estimate(config, calibrate=args.calibrate)
    except (ConfigError, InputError, PolicyError, PricingError, EstimateError) as exc:
        print(f"moderate: error: {exc}", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_text(result))
    return exitcodes.EXIT_OK


def estimate(config: RunConfig, *, calibrate: str | None = None, date: str | None = "today") -> dict[str, Any]:
    """The estimate as a JSON-ready dict (see `docs/audit.md` for the keys)."""
    model = job_model(config)
    pricing = lookup_pricing(provider=config.provider, model=model, input_per_million=config.input_per_million,
                             cached_input_per_million=config.cached_input_per_million,
                             output_per_million=config.output_per_million)
    calibration = read_calibration(Path(calibrate)) if calibrate else None
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


def read_calibration(out: Path) -> dict[str, Any]:
    """Measured completion tokens per request of a finished run, per policy and overall."""
    try:
        report = orjson.loads((out / "cost_report.json").read_bytes())
    except FileNotFoundError:
        raise EstimateError(f"{out}: no cost_report.json (--calibrate needs a finished run's directory)") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise EstimateError(f"{out / 'cost_report.json'}: cannot read ({exc})") from None
    if not report.get("requests"):
        raise EstimateError(f"{out}: the run made no billed request; nothing to calibrate from")
    return report


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


def render_text(result: dict[str, Any]) -> str:
    """The estimate for people: one table per policy and the assumptions behind it."""
    lines = [
        f"moderate estimate: {result['rows']:,} rows x {result['policy_count']} policies; "
        f"model {result['model']} via {result['provider']}, effort {result['reasoning_effort']}, "
        f"format {result['output_format']}",
        f"rows: {result['skipped_empty']:,} empty (skipped), {result['input_errors']:,} unreadable, "
        f"{result['duplicates']:,} duplicates of an earlier row (sent once)",
        "",
        f"{'policy':<20} {'requests':>10} {'prompt tokens':>14} {'output tokens (low / expected / high)':>40}"
        f" {'cost USD (low / expected / high)':>36}",
    ]
    for name, p in result["policies"].items():
        lines.append(_row(name, p))
        if p["too_long"] or p["truncated"]:
            lines.append(f"{'':<20} {p['too_long']:,} too long (skipped), {p['truncated']:,} truncated")
    lines.append(_row("total", result))
    lines.append("")
    seconds = result["seconds"]
    if seconds is None:
        lines.append("time: no --rpm/--tpm configured; the endpoint's speed and --concurrency set it")
    else:
        limits = ", ".join(f"{k} {result[k]:,.0f}" if result[k] >= 1 else f"{k} {result[k]:g}"
                           for k in ("rpm", "tpm") if result[k])
        lines.append(f"time at {limits}: {_duration(seconds['expected'])} "
                     f"({_duration(seconds['low'])} to {_duration(seconds['high'])}); alone, each policy: "
                     + ", ".join(f"{name} {_duration(p['seconds']['expected'])}"
                                 for name, p in result["policies"].items()))
    p = result["pricing"]
    lines.append(f"prices per 1 M tokens: input ${p['input_per_million']:g}, cached input "
                 f"${p['cached_input_per_million']:g}, output ${p['output_per_million']:g} "
                 "(low end: the template and policy billed as cached input)")
    lines.append("prompt tokens: exact (o200k, Harmony template, today's date); the bill uses the server's count")
    if result["calibrated_from"]:
        lines.append(f"output tokens: measured by the run in {result['calibrated_from']} (range x0.8 to x1.25)")
    else:
        lines.append("output tokens per request assumed (reasoning included; --calibrate OUT_DIR uses a "
                     "finished run's averages instead):")
        lines.append(f"  {'effort':<8} {'low':>6} {'expected':>9} {'high':>6}")
        for effort, v in result["assumed_output_tokens"].items():
            lines.append(f"  {effort:<8} {v['low']:>6} {v['expected']:>9} {v['high']:>6}")
        answers = ", ".join(f"{k} {v}" for k, v in result["answer_tokens"].items())
        lines.append(f"  plus the answer: {answers} tokens")
    return "\n".join(lines) + "\n"


def _row(name: str, p: dict[str, Any]) -> str:
    c, d = p["completion_tokens"], p["cost_usd_range"]
    tokens = f"{c['low']:,.0f} / {c['expected']:,.0f} / {c['high']:,.0f}"
    dollars = f"{d['low']:,.4f} / {d['expected']:,.4f} / {d['high']:,.4f}"
    return f"{name:<20} {p['requests']:>10,} {p['prompt_tokens']:>14,} {tokens:>40} {dollars:>36}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
