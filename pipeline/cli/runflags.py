"""Flags of `moderate run` for nightly jobs: kept columns, sampling, JSON logs, quality guards.

Each overrides a config key (docs/config.md); `run_overrides` reads them back for `job_config`,
None where a command has no such flag.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_run_arguments", "run_overrides"]


def _columns(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{value!r}: column names separated by commas, none empty")
    return names


def _threshold(value: str) -> float | str:
    if value == "off":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: a share such as 0.05, or off") from None


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-columns", type=_columns, metavar="A,B",
                        help="input columns to carry into the label shards (gold labels, metadata, "
                             "name=value partition folders)")
    parser.add_argument("--sample", type=float, metavar="N",
                        help="label a uniform random sample: about N rows (N >= 1) or a fraction (N < 1); "
                             "reports scale counts and cost to the whole input")
    parser.add_argument("--seed", type=int, metavar="S", help="the sample's seed (default 0): same seed, same rows")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="json: one JSON object per event on stderr (start, progress, pause, finish)")
    parser.add_argument("--log-interval", type=float, metavar="S",
                        help="seconds between progress lines off a terminal, or progress events of the JSON log "
                             "(default 60)")
    parser.add_argument("--canaries", metavar="FILE",
                        help="texts with known verdicts per policy (columns text, policy, violation), sent "
                             "fresh with every run; a wrong verdict exits 6")
    parser.add_argument("--drift-threshold", type=_threshold, metavar="P",
                        help="flag a violation rate this far from earlier nights' (absolute, default 0.05) and "
                             "exit 7; off: never")
    parser.add_argument("--alert-webhook", metavar="URL",
                        help="when the run exits with any code but 0, POST a JSON summary here (Slack/Teams "
                             "'text' field); the URL is never printed")
    parser.add_argument("--alert-command", metavar="CMD",
                        help="when the run exits with any code but 0, run CMD with the JSON summary on stdin")
    parser.add_argument("--gpu-hour-usd", type=float, metavar="USD",
                        help="self-hosted: GPU cost per hour, for a cost per 1,000 labels from wall time")


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = ("keep_columns", "sample", "seed", "log_format", "log_interval", "canaries", "drift_threshold",
             "gpu_hour_usd", "alert_webhook", "alert_command")
    return {name: getattr(args, name, None) for name in names}
