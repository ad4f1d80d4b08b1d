"""`moderate run`: opens the job's output, runs it, reports, and picks the exit code.

The job itself is checked and assembled in `pipeline.engines.job`; signals are handled by
`pipeline.engines.signals`. `run_local` raises `UserError` for a
mistake found before sending and returns an `Ending` otherwise; `run_job_async` (the CLI's) turns
both into one line on stderr and an exit code. Tracebacks are kept for bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import TextIO

from pipeline.call.client import Transport
from pipeline.call.endpoints import open_endpoint, open_endpoints
from pipeline.config.settings import RunConfig, run_secrets
from pipeline.core.errors import UserError, exit_code_for
from pipeline.core.records import Status
from pipeline.engines.alerting import alert_after_error, alert_after_run
from pipeline.engines.ending import Ending, outcome_word
from pipeline.engines.job import UsageError, build_run, open_job
from pipeline.engines.local.runner import Run
from pipeline.engines.progress import LineProgress, Progress
from pipeline.engines.runlog import JsonProgress, LineStream, RunLog
from pipeline.engines.runstate import RunTally
from pipeline.engines.session import open_session
from pipeline.engines.signals import RunSignals
from pipeline.output.store import ResultStore, StoreError
from pipeline.plan.planner import PolicyPlan
from pipeline.quality.nightly import (
    canary_requests,
    canary_slots,
    finish_canaries,
    run_rates,
    sampler,
    start_fields,
)
from pipeline.readers import InputSet


def run_job(config: RunConfig, *, stream: TextIO | None = None, transport: Transport | None = None,
            progress: bool | None = None) -> int:
    """Run one moderation job and return its exit code (see `pipeline.core.exitcodes`)."""
    return asyncio.run(run_job_async(config, stream=stream, transport=transport, progress=progress))


async def run_job_async(config: RunConfig, *, stream: TextIO | None = None, transport: Transport | None = None,
                        progress: bool | None = None) -> int:
    """`run_job` inside a running event loop: a user's mistake becomes one line and its exit code."""
    log = RunLog(stream if stream is not None else sys.stderr, fmt=config.log_format,
                 secret=run_secrets(config))
    try:
        ending = await run_local(config, log=log, transport=transport, progress=progress)
    except UserError as exc:
        code = exit_code_for(exc)
        log.say("error", f"moderate: error: {exc}", exit_code=code)
        await asyncio.to_thread(alert_after_error, config, log, exit_code=code, message=str(exc))
        return code
    await asyncio.to_thread(alert_after_run, config, log, ending)
    return ending.exit_code


async def run_local(config: RunConfig, *, log: RunLog, transport: Transport | None = None,
                    progress: bool | None = None, signals: bool = True,
                    on_start: Callable[[Callable[[], None]], None] | None = None) -> Ending:
    """Run one job on this process's event loop; raises `UserError` for a mistake found before sending.

    ``signals``: SIGINT/SIGTERM drain the run (the CLI); off for a library call, whose caller owns them.
    ``on_start``: called, once the run is under way, with a ``stop()`` that any thread may call to drain it
    (calls in flight finish and are labelled, the rest ``interrupted``; the folder stays resumable).
    """
    return await _run_job(config, log=log, transport=transport, progress=progress, signals=signals,
                          on_start=on_start)


async def _run_job(config: RunConfig, *, log: RunLog, transport: Transport | None,
                   progress: bool | None, signals: bool,
                   on_start: Callable[[Callable[[], None]], None] | None = None) -> Ending:
    job = open_job(config, transport=transport)
    for warning in job.warnings:
        log.say("warning", warning)
    inputs, plans, pricing, model, api_key = job.inputs, job.plans, job.pricing, job.model, job.api_key
    try:
        sample, rate = sampler(config, inputs.total_rows)
    except ValueError as exc:
        raise UsageError(f"--sample: {exc}") from None
    canaries, ignored = canary_requests(config, [p.policy.name for p in plans])
    if ignored:
        log.say("warning", f"moderate: warning: {ignored:,} canaries are for policies this run does not use "
                "(not sent)", ignored_canaries=ignored)
    with open_session(config, job, log=log) as session:
        if session.manifest.finished:
            return session.nothing_to_do()
        store, manifest, outdir = session.store, session.manifest, session.outdir
        async with contextlib.AsyncExitStack() as stack:
            where = LineStream(log) if log.json else log.stream
            endpoint = await open_endpoints(stack, config, api_keys=job.api_keys, transport=transport, stream=where) \
                if config.endpoints else await open_endpoint(stack, config, api_key=api_key, transport=transport,
                                                             stream=where)
            total = _total(inputs, plans, rate)
            meter = _meter(config, log, total=total, policies=len(plans), progress=progress)
            run = build_run(config, inputs=inputs, plans=plans, endpoint=endpoint, store=store, outdir=outdir,
                             manifest=manifest, pricing=pricing, api_key=api_key, model=model, log=log,
                             progress=meter, sample=sample,  # type: ignore[arg-type]
                             canaries=canary_slots(canaries, [p.policy.name for p in plans]), job=job)
            log.event("start", **start_fields(run, config, inputs, rate, len(canaries)))
            if on_start is not None:
                loop = asyncio.get_running_loop()
                on_start(lambda: loop.call_soon_threadsafe(run.request_stop, Status.INTERRUPTED))
            result = await _execute(run, store, log, signals=signals)
        if canaries:
            result.canaries_wrong = finish_canaries(outdir.path, canaries, run.canary_answers, run.settings.run_id)
        session.mark_finished(result)
        return session.finish(result, run_id=run.settings.run_id)


async def _execute(run: Run, store: ResultStore, log: RunLog, *, signals: bool) -> RunTally:
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


def _meter(config: RunConfig, log: RunLog, *, total: int | None, policies: int,
           progress: bool | None) -> Progress | JsonProgress | LineProgress:
    """JSON events for a JSON log or a library caller; a bar on a terminal (or when asked); else plain lines."""
    if log.json or log.listener:
        return JsonProgress(log, total=total, interval=config.log_interval)
    if progress is None and not log.stream.isatty():
        return LineProgress(log, total=total, policies=policies, interval=config.log_interval)
    return Progress(total=total, enabled=progress, stream=log.stream)


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


