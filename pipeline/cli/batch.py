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
    from pipeline.core.cost import batch_discount, lookup_pricing
    from pipeline.engines.batchfiles.ingest import ingest
    from pipeline.engines.batchfiles.job import open_job, restore
    from pipeline.report.cost_report import add_earlier_stores, build_report, write_reports

    def step() -> int:
        from pipeline.core.storage import is_uri

        if not is_uri(args.out_dir) and not Path(args.out_dir).is_dir():
            raise _Usage(f"{args.out_dir}: no such output folder: run 'moderate batch prepare --out OUT_DIR ...' "
                         "first")
        outdir = _locked(args.out_dir)
        try:
            manifest = outdir.read_manifest()
            if manifest is None or manifest.job is None:
                raise _Usage(f"{args.out_dir}: not prepared for batch files: run 'moderate batch prepare "
                             "--out OUT_DIR ...' first")
            config = restore(manifest.job, out=args.out_dir)
            _configure_storage(config)
            job = open_job(config)
            if job.identity != manifest.identity:
                changed = ", ".join(k for k in job.identity if manifest.identity.get(k) != job.identity[k])
                raise _Usage(f"{args.out_dir}: the job changed since 'batch prepare' ({changed} changed): "
                             "prepare it again")
            pricing = lookup_pricing(provider=config.provider, model=job.model,
                                     input_per_million=config.input_per_million,
                                     cached_input_per_million=config.cached_input_per_million,
                                     output_per_million=config.output_per_million)
            discounted = pricing.discounted(batch_discount(provider=config.provider, model=job.model))
            store = _store(config, outdir)
            done = ingest(job, manifest, outdir=outdir, store=store, files=list(args.results), pricing=discounted)
            report = build_report(billing=store.billing(manifest.out_id), runs=store.runs(manifest.out_id),
                                  labels_dir=outdir.labels, pricing=pricing, provider=config.provider,
                                  model=job.model)
            add_earlier_stores(report, manifest.earlier_stores_usd)
            write_reports(report, outdir.path)
            if outdir.local:
                from pipeline.report.html import write_html_report

                write_html_report(outdir.path, text_column=config.text_column, id_column=config.id_column)
        finally:
            outdir.unlock()
        for line in done.unreadable:
            print(f"moderate: warning: {line} (skipped)", file=sys.stderr)
        statuses = " ".join(f"{k}={v}" for k, v in sorted(done.statuses.items())) or "no labels written"
        left = done.statuses.get("batch_missing", 0) + done.statuses.get("batch_failed", 0)
        print(f"moderate: batch ingested: {done.lines:,} result lines from {done.files} file(s)"
              + (f" ({done.already} already ingested: skipped)" if done.already else "")
              + f"; {done.answered:,} answers, {done.failed:,} failed, {done.repeated:,} already stored; "
              f"batch cost ${done.cost_usd:.4f}, directory total ${report['cost_usd']:.4f}; {statuses}; "
              f"shards in {outdir.labels}, report in {outdir.path / 'cost_report.md'}", file=sys.stderr)
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
    from pipeline.config.settings import ConfigError
    from pipeline.core.cost import PricingError
    from pipeline.core.storage import StorageError
    from pipeline.output.outdir import OutputDirError
    from pipeline.output.outfiles import OutputFileError
    from pipeline.output.store import StoreError
    from pipeline.plan.policies import PolicyError
    from pipeline.readers import InputError

    try:
        return step()
    except OutputDirError as exc:
        print(f"moderate: error: {exc}", file=sys.stderr)
        return exitcodes.EXIT_LOCKED if exc.locked else exitcodes.EXIT_USAGE
    except (_Usage, ConfigError, InputError, PolicyError, PricingError, StoreError, StorageError, OutputFileError,
            ValueError) as exc:
        print(f"moderate: error: {exc}", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    except KeyboardInterrupt:
        print("moderate: interrupted; run the same command again", file=sys.stderr)
        return exitcodes.EXIT_INTERRUPTED
