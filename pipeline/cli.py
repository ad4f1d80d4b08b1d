"""The `moderate` command: `moderate run` labels a dataset, `moderate simulate` serves the simulator."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pipeline import exitcodes
from pipeline.config import EFFORTS, PROVIDERS, ConfigError, apply_overrides, load_config
from pipeline.records import OutputFormat

RUN_EPILOG = f"""\
Flags override the config file. The API key is read from the environment variable
MODERATION_API_KEY (or the one named by [endpoint] api_key_env), never from a flag.

{exitcodes.HELP}
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moderate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="label a dataset against one or more policies",
                              epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", nargs="?", help="TOML config (see configs/); flags override it")
    run.add_argument("--input", dest="inputs", action="append", metavar="PATH",
                     help="file, folder or glob (.parquet, .jsonl/.ndjson[.gz|.zst], .csv); repeatable")
    run.add_argument("--id-column", metavar="C", help="id column (default: 'id' if present, else file:row)")
    run.add_argument("--text-column", metavar="C", help="text column (default: text)")
    run.add_argument("--policy", dest="policies", action="append", metavar="FILE",
                     help="policy file or built-in name (spam, hate_harassment, ...); repeatable "
                          "(default: every built-in policy)")
    run.add_argument("--output-format", choices=[f.value for f in OutputFormat])
    run.add_argument("--out", metavar="DIR", help="output directory (default: out/run)")
    run.add_argument("--store", metavar="PATH",
                     help="result store to share across runs (default: OUT/store.sqlite; 'none' = no store)")
    run.add_argument("--provider", choices=PROVIDERS)
    run.add_argument("--base-url", metavar="URL")
    run.add_argument("--model", metavar="NAME")
    run.add_argument("--concurrency", type=int, metavar="N", help="connections and workers (default 64)")
    run.add_argument("--rpm", type=float, metavar="N", help="requests per minute (default: unlimited)")
    run.add_argument("--tpm", type=float, metavar="N", help="tokens per minute (default: unlimited)")
    run.add_argument("--request-timeout", type=float, metavar="S", help="seconds per attempt (default 120)")
    run.add_argument("--reasoning-effort", choices=EFFORTS, help="default low")
    run.add_argument("--max-tokens", type=int, metavar="N", help="output budget incl. reasoning (default 8192)")
    run.add_argument("--limit", type=int, metavar="N", help="only the first N input rows")
    run.add_argument("--max-cost", type=float, metavar="USD", help="stop sending once spend would pass this")
    run.add_argument("--keep-reasoning", action="store_true", default=None,
                     help="store the model's raw reasoning in the shards")
    run.add_argument("--force", action="store_true", default=None,
                     help="start the output directory over (answers in the store are reused)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")

    simulate = commands.add_parser("simulate", help="serve the built-in OpenAI-compatible simulator")
    from pipeline.simulator.cli import add_arguments

    add_arguments(simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("MODERATE_DEBUG"):
        # every request and answer on stderr; credentials are redacted (pipeline.redact)
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    if args.command == "simulate":
        from pipeline.simulator.cli import main as simulate_main

        return simulate_main(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from pipeline.app import run_job

    overrides = {
        "inputs": args.inputs, "id_column": args.id_column, "text_column": args.text_column,
        "policies": args.policies, "output_format": args.output_format, "out": args.out,
        "store": args.store, "provider": args.provider, "base_url": args.base_url, "model": args.model,
        "concurrency": args.concurrency, "rpm": args.rpm, "tpm": args.tpm,
        "request_timeout": args.request_timeout, "reasoning_effort": args.reasoning_effort,
        "max_tokens": args.max_tokens, "limit": args.limit, "max_cost": args.max_cost,
        "keep_reasoning": args.keep_reasoning, "force": args.force,
    }
    try:
        config = apply_overrides(load_config(args.config), overrides)
    except ConfigError as exc:
        print(f"moderate: error: {exc}", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    try:
        return run_job(config, progress=False if args.no_progress else None)
    except KeyboardInterrupt:  # before the run's own signal handling is in place
        print("moderate: interrupted while starting; rerun the same command to start or resume", file=sys.stderr)
        return exitcodes.EXIT_INTERRUPTED
    except Exception:  # a bug, not a user mistake: show everything and say so
        import traceback

        traceback.print_exc()
        print("moderate: internal error (a bug): please report it with the lines above", file=sys.stderr)
        return exitcodes.EXIT_INTERNAL
