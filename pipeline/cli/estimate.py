"""`moderate estimate`: rows, requests, tokens, cost and time of a job before it runs (no network)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from pipeline.audit.costing import estimate
from pipeline.config.rules import ConfigError
from pipeline.core import exitcodes

DESCRIPTION = """\
Count what `moderate run` would send for the same config and flags, without sending anything:
rows, requests (identical texts once, empty and too-long texts skipped), exact prompt tokens
(o200k + the gpt-oss Harmony template), projected output tokens and cost (low-expected-high), and
the time it takes at the configured --rpm/--tpm."""


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
    config = job_config(args)  # a user's mistake raises UserError: pipeline.cli.main prints it
    if not config.inputs:
        raise ConfigError("no input: pass --input PATH (file, folder or glob) or set [input] paths")
    result = estimate(config, calibrate=args.calibrate)
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_text(result))
    return exitcodes.EXIT_OK


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
