"""`moderate run`: opens the job's output, runs it, reports, and picks the exit code.

The job itself is checked and assembled in `pipeline.engines.job`; signals are handled by
`pipeline.engines.signals`. `run_local` raises `UserError` for a
mistake found before sending and returns an `Ending` otherwise; `run_job_async` (the CLI's) turns
both into one line on stderr and an exit code. Tracebacks are kept for bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from pipeline.call.client import Transport
from pipeline.call.endpoints import open_endpoint
from pipeline.config.settings import RunConfig
from pipeline.core import exitcodes
from pipeline.core.cost import Pricing
from pipeline.core.errors import UserError, exit_code_for
from pipeline.engines.ending import Ending, exit_code, outcome_word, problems, summary_line
from pipeline.engines.job import UsageError, build_run, job_description, job_identity, open_job
from pipeline.engines.local.runner import Run
from pipeline.engines.progress import Progress
from pipeline.engines.runlog import JsonProgress, LineStream, RunLog
from pipeline.engines.runstate import RunResult
from pipeline.engines.signals import RunSignals
from pipeline.output import open_output_dir
from pipeline.output.outdir import Manifest, OutputDir
from pipeline.output.resume import open_manifest
from pipeline.output.store import NullStore, ResultStore, StoreError
from pipeline.plan.planner import PolicyPlan
from pipeline.quality.nightly import (
    CANARY_FILE,
    canary_requests,
    canary_slots,
    extend_report,
    finish_canaries,
    finish_fields,
    run_rates,
    sampler,
    start_fields,
    summary_notes,
)
from pipeline.readers import InputSet
from pipeline.report.cost_report import add_earlier_stores, build_report, write_reports


def run_job(config: RunConfig, *, stream: TextIO | None = None, transport: Transport | None = None,
            progress: bool | None = None) -> int:
    """Run one moderation job and return its exit code (see `pipeline.core.exitcodes`)."""
    return asyncio.run(run_job_async(config, stream=stream, transport=transport, progress=progress))


async def run_job_async(config: RunConfig, *, stream: TextIO | None = None, transport: Transport | None = None,
                        progress: bool | None = None) -> int:
    """`run_job` inside a running event loop: a user's mistake becomes one line and its exit code."""
    log = RunLog(stream if stream is not None else sys.stderr, fmt=config.log_format,
                 secret=os.environ.get(config.api_key_env))
    try:
        return (await run_local(config, log=log, transport=transport, progress=progress)).exit_code
    except UserError as exc:
        code = exit_code_for(exc)
        log.say("error", f"moderate: error: {exc}", exit_code=code)
        return code


async def run_local(config: RunConfig, *, log: RunLog, transport: Transport | None = None,
                    progress: bool | None = None, signals: bool = True) -> Ending:
    """Run one job on this process's event loop; raises `UserError` for a mistake found before sending.

    ``signals``: SIGINT/SIGTERM drain the run (the CLI); off for a library call, whose caller owns them.
    """
    return await _run_job(config, log=log, transport=transport, progress=progress, signals=signals)


async def _run_job(config: RunConfig, *, log: RunLog, transport: Transport | None,
                   progress: bool | None, signals: bool) -> Ending:
    job = open_job(config, transport=transport)
    inputs, plans, pricing, model, api_key = job.inputs, job.plans, job.pricing, job.model, job.api_key
    try:
        sample, rate = sampler(config, inputs.total_rows)
    except ValueError as exc:
        raise UsageError(f"--sample: {exc}") from None
    canaries, ignored = canary_requests(config, [p.policy.name for p in plans])
    if ignored:
        log.say("warning", f"moderate: warning: {ignored:,} canaries are for policies this run does not use "
                "(not sent)", ignored_canaries=ignored)
    outdir = open_output_dir(config.out, kept=inputs.kept_fields)
    outdir.lock()
    try:
        store = _open_store(config, outdir)
        manifest = open_manifest(outdir, job_identity(config, inputs, plans, model), shard_rows=config.shard_rows,
                                 force=bool(config.force), store=store)
        manifest.description = job_description(config, inputs, plans, model)
        if manifest.finished:
            return _nothing_to_do(store, manifest, outdir, pricing, config, model, log)
        async with contextlib.AsyncExitStack() as stack:
            endpoint = await open_endpoint(stack, config, api_key=api_key, transport=transport,
                                           stream=LineStream(log) if log.json else log.stream)
            total = _total(inputs, plans, rate)
            meter = JsonProgress(log, total=total, interval=config.log_interval) \
                if log.json or log.listener else Progress(total=total, enabled=progress, stream=log.stream)
            run = build_run(config, inputs=inputs, plans=plans, endpoint=endpoint, store=store, outdir=outdir,
                             manifest=manifest, pricing=pricing, api_key=api_key, model=model, log=log,
                             progress=meter, sample=sample,  # type: ignore[arg-type]
                             canaries=canary_slots(canaries, [p.policy.name for p in plans]))
            log.event("start", **start_fields(run, config, inputs, rate, len(canaries)))
            result = await _execute(run, store, log, signals=signals)
        if canaries:
            result.canaries_wrong = finish_canaries(outdir.path, canaries, run.canary_answers, run.settings.run_id)
        return _finish(run, result, store, manifest, outdir, pricing, config, model, log)
    finally:
        outdir.unlock()


async def _execute(run: Run, store: ResultStore, log: RunLog, *, signals: bool) -> RunResult:
    started_at = time.time()
    store.record_run(_run_row(run, started_at, "running"))
    handlers = RunSignals(run, store, log) if signals else None
    try:
        result = await run.execute()
    except BaseException:
        # an unreadable input mid-run, a bug: keep what was answered and billed
        store.record_run(_run_row(run, started_at, "failed"))
        with contextlib.suppress(StoreError):
            store.close()
        raise
    finally:
        if handlers is not None:
            handlers.remove()
        if run.progress:
            run.progress.close()
    store.record_run(_run_row(run, started_at, outcome_word(result)))
    store.record_rates(run_id=run.settings.run_id, out_id=run.settings.out_id, ended_at=time.time(),
                       counts=run_rates(run.stats.violations))
    try:
        store.close()
    except StoreError as exc:
        result.write_error = result.write_error or str(exc)
    return result


def _finish(run: Run, result: RunResult, store: ResultStore, manifest: Manifest, outdir: OutputDir,
            pricing: Pricing, config: RunConfig, model: str, log: RunLog) -> Ending:
    expected_shards = -(-result.rows_read // manifest.shard_rows) if result.input_exhausted else -1
    complete = sum(1 for s in manifest.shards.values() if s.complete)
    if result.stop_status is None and not result.write_error and complete == expected_shards \
            and not result.internal_error:
        manifest.finished = True
        manifest.total_rows = result.rows_read
    try:
        if manifest.finished:
            outdir.write_manifest(manifest)
        report = _reports(store, manifest, outdir, pricing, config, model)
    except OSError as exc:  # the disk filled up (the store's journal may have taken the last bytes)
        if result.write_error:
            log.say("error", f"moderate: error: {result.write_error}; {_what_was_kept(store)}")
        return _cannot_write(outdir, exc, log, store)
    code = exit_code(result, report)
    line = summary_line(result, report, policies=len(run.plans), labels_dir=outdir.labels,
                        report_path=outdir.path / "cost_report.md", simulated=config.provider == "simulator")
    if notes := summary_notes(report):
        line += f"; {notes}"
    if report["duplicate_ids"]:
        log.say("warning", f"moderate: warning: {report['duplicate_ids']:,} rows share an id with another row "
                "(each is labelled on its own; join on row_number)", duplicate_ids=report["duplicate_ids"])
    if result.write_error:
        log.say("error", f"moderate: error: {result.write_error}; {_what_was_kept(store)}")
    elif result.fatal_error:
        log.say("error", f"moderate: error: the endpoint refused the run: {result.fatal_error}")
    if result.internal_error:
        if not log.json and result.internal_traceback:
            log.stream.write(result.internal_traceback)
        log.say("error", f"moderate: internal error (a bug) on {result.stats.internal_errors:,} rows, which are "
                f"marked failed: {result.internal_error}; please report it with the traceback above",
                traceback=result.internal_traceback)
    if result.canaries_wrong:
        log.say("error", f"moderate: error: {result.canaries_wrong} canaries got a wrong verdict (a model, host or "
                f"policy change?): see {outdir.path / CANARY_FILE}")
    s = result.stats
    log.say("finish", line, outcome=outcome_word(result), exit_code=code, run_id=run.settings.run_id,
            out=str(outdir.path), elapsed_s=round(result.elapsed, 3), sent=s.sent, store_hits=s.store_hits,
            duplicates=s.duplicates, run_cost_usd=round(s.spent_usd, 8), **finish_fields(report))
    return Ending(outcome_word(result), code, str(outdir.path), s.spent_usd, report, s)


def _nothing_to_do(store: ResultStore, manifest: Manifest, outdir: OutputDir, pricing: Pricing,
                   config: RunConfig, model: str, log: RunLog) -> Ending:
    try:
        report = _reports(store, manifest, outdir, pricing, config, model)
    except OSError as exc:
        return _cannot_write(outdir, exc, log, store)
    finally:
        store.close()
    bad = problems(report)
    code = exitcodes.EXIT_ROWS_FAILED if bad else exitcodes.EXIT_OK
    log.say("finish", f"moderate: nothing to do: {outdir.path} is complete ({manifest.total_rows} rows"
            + (f", {bad} labels not ok: --force retries them, cached answers are reused" if bad else "")
            + f"); report in {outdir.path / 'cost_report.md'}", outcome="nothing_to_do", exit_code=code,
            out=str(outdir.path), **finish_fields(report))
    return Ending("nothing_to_do", code, str(outdir.path), 0.0, report, None)


def _open_store(config: RunConfig, outdir: OutputDir) -> ResultStore:
    own = Path(outdir.default_store())
    if config.store != "none":
        return ResultStore(config.store or str(own))
    if own.exists():
        raise UsageError(f"{outdir.path} keeps the answers it paid for and what it spent in {own.name}: "
                         "--store none would pay for them again and forget that spend; drop --store none, "
                         "or use a new --out")
    return NullStore()


def _cannot_write(outdir: OutputDir, exc: OSError, log: RunLog, store: ResultStore) -> Ending:
    where = exc.filename or outdir.path
    log.say("error", f"moderate: error: cannot write the report in {outdir.path} ({where}: {exc.strerror or exc}); "
            f"{_what_was_kept(store)}", exit_code=exitcodes.EXIT_USAGE)
    return Ending("write_failed", exitcodes.EXIT_USAGE, str(outdir.path), 0.0, None, None)


def _what_was_kept(store: ResultStore) -> str:
    """What a failed write left, as it is: never a claim that answers were saved when they were not."""
    if not store.failed:
        return "the answers paid for are in the store: free some space and run the same command to resume"
    lost = f"{store.unsaved:,} answers paid for could not be saved in it and will be asked again; " \
        if store.unsaved else ""
    return f"{lost}answers committed before the failure are kept: free some space and run the same command to resume"


def _reports(store: ResultStore, manifest: Manifest, outdir: OutputDir, pricing: Pricing, config: RunConfig,
             model: str) -> dict:
    report = build_report(billing=store.billing(manifest.out_id), runs=store.runs(manifest.out_id),
                          labels_dir=outdir.labels, pricing=pricing, provider=config.provider, model=model)
    add_earlier_stores(report, manifest.earlier_stores_usd)
    extend_report(report, out=outdir.path, manifest=manifest, config=config,
                  rates=store.rates(manifest.out_id, history=config.drift_runs))
    write_reports(report, outdir.path)
    if manifest.store is not None:  # the directory keeps its own total, whatever store the next run uses
        manifest.spent_usd = report["cost_usd"]
        outdir.write_manifest(manifest)
    if outdir.local:  # the HTML report reads the shards from a local folder
        from pipeline.report.html import write_html_report  # polars and numpy only for the end of a run

        write_html_report(outdir.path, text_column=config.text_column, id_column=config.id_column)
    return report


def _total(inputs: InputSet, plans: list[PolicyPlan], rate: float | None = None) -> int | None:
    if inputs.total_rows is None:
        return None
    rows = inputs.total_rows if rate is None else round(inputs.total_rows * rate)  # about that many
    return rows * len(plans)


def _run_row(run: Run, started_at: float, outcome: str) -> dict:
    s = run.stats
    return {"run_id": run.settings.run_id, "out_id": run.settings.out_id, "started_at": started_at,
            "ended_at": time.time(), "outcome": outcome, "labels": s.labels, "sent": s.sent,
            "store_hits": run.planner.store_hits, "duplicates": run.planner.duplicates,
            "elapsed_s": round(run.result.elapsed, 3)}


