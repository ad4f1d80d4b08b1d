"""``moderate batch prepare`` and ``moderate batch ingest``: flags, error handling, exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core import exitcodes
from pipeline.core.errors import UserError
from pipeline.engines.batchfiles.lines import parse_size
from pipeline.engines.batchfiles.prepare import DEFAULT_MAX_BYTES, DEFAULT_MAX_LINES

if TYPE_CHECKING:
    from pipeline.config.settings import RunConfig
    from pipeline.output.outdir import OutputDir
    from pipeline.output.store import ResultStore

_PROBLEMS = ("failed", "invalid_output", "truncated", "rejected", "input_error", "batch_missing", "batch_failed")


def add_batch_command(commands: argparse._SubParsersAction) -> None:
    """Register ``batch prepare`` and ``batch ingest`` under ``moderate``."""
    from pipeline.cli.jobflags import add_job_arguments

    batch = commands.add_parser("batch", help="label through batch files (vllm run-batch, a host's batch API)")
    steps = batch.add_subparsers(dest="batch_step", required=True, metavar="STEP")
    prepare = steps.add_parser("prepare", help="write the job's requests as OpenAI batch input files",
                               epilog=exitcodes.HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_job_arguments(prepare)
    prepare.add_argument("-o", "--output", type=Path, required=True, metavar="REQUESTS.jsonl",
                         help="batch input file (split into REQUESTS-00001.jsonl ... when over a limit)")
    prepare.add_argument("--max-lines", type=_positive, default=DEFAULT_MAX_LINES, metavar="N",
                         help=f"requests per file (default {DEFAULT_MAX_LINES:,})")
    prepare.add_argument("--max-bytes", type=_size, default=DEFAULT_MAX_BYTES, metavar="SIZE",
                         help="bytes per file, e.g. 100MB or 200MiB (default 100MB)")
    prepare.set_defaults(handler=_prepare)
    ingest = steps.add_parser("ingest", help="read batch results into the output folder: store, shards, report",
                              epilog=exitcodes.HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ingest.add_argument("out_dir", metavar="OUT_DIR", help="the output folder 'batch prepare' set up (--out)")
    ingest.add_argument("results", nargs="+", type=Path, metavar="RESULTS.jsonl",
                        help="results and error files the batch API or vllm run-batch wrote")
    ingest.set_defaults(handler=_ingest)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _size(text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 1024:
        raise argparse.ArgumentTypeError("must be at least 1KB")
    return value


def _prepare(args: argparse.Namespace) -> int:
    from pipeline.cli.jobflags import job_config
    from pipeline.engines.batchfiles.job import open_job
    from pipeline.engines.batchfiles.prepare import prepare, summary
    from pipeline.output.outfiles import output_target

    def step() -> int:
        config = job_config(args)
        _configure_storage(config)
        if config.store == "none":
            raise _Usage("batch prepare needs the result store (not --store none): ingest fills it")
        output = output_target(args.output, flag="--output", regular_only=True, create_within=config.out)
        job = open_job(config)
        outdir = _locked(config.out)
        try:
            store = _store(config, outdir)
            done = prepare(job, outdir=outdir, store=store, output=output, max_lines=args.max_lines,
                           max_bytes=args.max_bytes)
            store.close()
        finally:
            outdir.unlock()
        summary(done, outdir, sys.stderr)
        return exitcodes.EXIT_OK

    return _guarded(step)


def _ingest(args: argparse.Namespace) -> int:
    from pipeline.engines.batchfiles.folder import ingest_folder

    def step() -> int:
        result = ingest_folder(args.out_dir, [str(f) for f in args.results])
        done, report = result.done, result.report
        for line in done.unreadable:
            print(f"moderate: warning: {line} (skipped)", file=sys.stderr)
        statuses = " ".join(f"{k}={v}" for k, v in sorted(done.statuses.items())) or "no labels written"
        left = done.statuses.get("batch_missing", 0) + done.statuses.get("batch_failed", 0)
        print(f"moderate: batch ingested: {done.lines:,} result lines from {done.files} file(s)"
              + (f" ({done.already} already ingested: skipped)" if done.already else "")
              + f"; {done.answered:,} answers, {done.failed:,} failed, {done.repeated:,} already stored; "
              f"batch cost ${done.cost_usd:.4f}, directory total ${report['cost_usd']:.4f}; {statuses}; "
              f"shards in {result.labels_dir}, report in {result.report_path}", file=sys.stderr)
        if left:
            print(f"moderate: {left:,} labels have no answer yet: 'moderate run' with the same job flags and "
                  f"--out {args.out_dir} sends just those", file=sys.stderr)
        failed = any(report["statuses"].get(s, 0) for s in _PROBLEMS)
        return exitcodes.EXIT_ROWS_FAILED if failed else exitcodes.EXIT_OK

    return _guarded(step)


class _Usage(UserError):
    """A one-line user mistake."""


def _configure_storage(config: RunConfig) -> None:
    from pipeline.core.storage import StorageSettings, configure

    configure(StorageSettings(config.storage_endpoint_url, config.storage_timeout, config.storage_lock))


def _locked(path: str) -> OutputDir:
    from pipeline.output import open_output_dir

    outdir = open_output_dir(path)
    outdir.lock()
    return outdir


def _store(config: RunConfig, outdir: OutputDir) -> ResultStore:
    from pipeline.output.store import ResultStore

    return ResultStore(config.store or outdir.default_store())


def _guarded(step: Callable[[], int]) -> int:
    """Run a sub-command's step; its `UserError`s reach `pipeline.cli.main`, which prints them once."""
    try:
        return step()
    except ValueError as exc:  # a batch file line that cannot be read (BatchLineError)
        print(f"moderate: error: {exc}", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    except KeyboardInterrupt:
        print("moderate: interrupted; run the same command again", file=sys.stderr)
        return exitcodes.EXIT_INTERRUPTED
