"""The `moderate` command. Each sub-command registers its own flags and handler here.

`run` labels a dataset, `simulate` serves the built-in simulator. Commands that work on the same
job as `run` (inputs, policies, endpoint) take the same flags through `add_job_arguments` and read
them back with `job_config`, so a config file means the same thing to all of them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from pipeline.cli.jobflags import add_job_arguments, job_config
from pipeline.cli.runflags import add_run_arguments
from pipeline.config.rules import ConfigError
from pipeline.config.settings import RunConfig
from pipeline.core import exitcodes
from pipeline.core.errors import ModerateError, exit_code_for
from pipeline.engines.runlog import RunLog

RUN_EPILOG = f"""\
Flags override the config file. The API key is read from the environment variable
MODERATION_API_KEY (or the one named by [endpoint] api_key_env), never from a flag.

{exitcodes.HELP}
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moderate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="label a dataset against one or more policies",
                              epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_job_arguments(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    add_run_arguments(run)
    run.add_argument("--preflight", action="store_true", help="run `moderate check` first; stop unless it passes")
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process (default); ray: a Ray cluster (docs/ray.md; pip install '.[ray]')")
    run.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (default: start Ray on this machine)")
    run.add_argument("--ray-actors", type=int, metavar="N", help="labelling actors (default: the cluster's CPUs)")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="preflight: endpoint, key, model, one canary request per policy",
                                epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_job_arguments(check)
    check.set_defaults(handler=_check)

    simulate = commands.add_parser("simulate", help="serve the built-in OpenAI-compatible simulator")
    from pipeline.simulator.cli import add_arguments
    from pipeline.simulator.cli import main as simulate_main

    add_arguments(simulate)
    simulate.set_defaults(handler=simulate_main)

    from pipeline.cli import estimate as estimate_cli

    estimate = commands.add_parser("estimate", help="count rows, tokens, cost and time of a job (no network)",
                                   description=estimate_cli.DESCRIPTION)
    add_job_arguments(estimate)
    estimate_cli.add_arguments(estimate)
    estimate.set_defaults(handler=estimate_cli.main)

    from pipeline.cli import evaluate as evaluate_cli

    evaluate = commands.add_parser("eval", help="score a run's labels against ground truth",
                                   description=evaluate_cli.DESCRIPTION)
    evaluate_cli.add_arguments(evaluate)
    evaluate.set_defaults(handler=evaluate_cli.main)

    from pipeline.report import html as htmlreport

    report = commands.add_parser("report", help="write OUT_DIR/report.html again (labels, cost, latency, eval)")
    htmlreport.add_arguments(report)
    report.set_defaults(handler=htmlreport.main)

    from pipeline.cli import export as export_cli

    export = commands.add_parser("export", help="write a training set (chat JSONL or Parquet) from a run",
                                 description=export_cli.DESCRIPTION)
    export_cli.add_arguments(export)
    export.set_defaults(handler=export_cli.main)

    from pipeline.cli.batch import add_batch_command

    add_batch_command(commands)
    parser.set_defaults(commands=commands.choices)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; an unknown flag is reported with the sub-command's usage, not the top level's."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = args.commands.get(args.command, parser)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run one sub-command, and turn what happened into an exit code: the one place errors are caught."""
    args = None
    previous = _interrupt_on_sigterm()
    try:
        args = parse(argv)
        if os.environ.get("MODERATE_DEBUG"):
            # every request and answer on stderr; credentials are redacted (pipeline.call.redact)
            logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
        return args.handler(args)
    except ModerateError as exc:  # a user's mistake (or a known failure): one line, the class's exit code
        code = exit_code_for(exc)
        _error_log(args).say("error", f"moderate: error: {exc}", exit_code=code)
        return code
    except KeyboardInterrupt:  # before a command's own signal handling is in place (or it has none)
        print("moderate: interrupted; run the same command again to start or resume", file=sys.stderr)
        return exitcodes.EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt_on_sigterm() -> Callable[[int, FrameType | None], Any] | int | None:
    """SIGTERM means what Ctrl-C means (exit 130, one line) from the first moment, before the slow
    imports and the reading of inputs; a run replaces it with its own handler while it sends.
    Returns the handler to put back (None when called off the main thread, where it cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _error_log(args: argparse.Namespace | None) -> RunLog:
    fmt = getattr(args, "log_format", None) or "text"
    return RunLog(sys.stderr, fmt=fmt, secret=os.environ.get(getattr(args, "api_key_env", None) or
                                                              "MODERATION_API_KEY"))


def _run(args: argparse.Namespace) -> int:
    from pipeline.engines.local.app import run_job

    config = job_config(args)
    if args.ray_actors is not None and args.ray_actors < 1:
        raise ConfigError(f"--ray-actors {args.ray_actors}: must be at least 1")
    if args.preflight and (code := _check(args, config)) != exitcodes.EXIT_OK:
        return code
    try:
        if args.engine == "ray":
            from pipeline.engines.ray.engine import run_on_ray

            return run_on_ray(config, address=args.ray_address, actors=args.ray_actors,
                              progress=False if args.no_progress else None)
        from pipeline.core.arrowsetup import configure_arrow

        configure_arrow()
        return run_job(config, progress=False if args.no_progress else None)
    except KeyboardInterrupt:  # before the run's own signal handling is in place
        print("moderate: interrupted while starting; rerun the same command to start or resume", file=sys.stderr)
        return exitcodes.EXIT_INTERRUPTED
    except ModerateError:
        raise
    except Exception:  # a bug, not a user mistake: show everything and say so
        import traceback

        traceback.print_exc()
        print("moderate: internal error (a bug): please report it with the lines above", file=sys.stderr)
        return exitcodes.EXIT_INTERNAL


def _check(args: argparse.Namespace, config: RunConfig | None = None) -> int:
    from pipeline.call.preflight import run_check

    return run_check(config or job_config(args))
