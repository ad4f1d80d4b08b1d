"""Assembles a run from a `RunConfig`: opens everything, runs, reports, picks the exit code.

Every mistake a user can make ends here as one line on stderr and an exit code; tracebacks are
kept for bugs. Signals are handled here too: the first SIGINT/SIGTERM lets calls in flight finish
(a grace period), the second exits at once; either way the directory stays resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pipeline import exitcodes
from pipeline.budget import Budget
from pipeline.canaries import CanaryError
from pipeline.client import Transport
from pipeline.config import ConfigError, RunConfig, check_context_room
from pipeline.cost import Pricing, PricingError, lookup_pricing
from pipeline.ending import exit_code, outcome_word, problems, summary_line
from pipeline.endpoints import SIMULATOR_MODEL, Endpoint, open_endpoint
from pipeline.judge import CallSettings, Judge
from pipeline.labels import COLUMN_NAMES
from pipeline.nightly import (
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
from pipeline.outdir import Manifest, OutputDir, OutputDirError, open_output_dir
from pipeline.planner import PolicyPlan, make_policy_plan
from pipeline.policies import PolicyError, builtin_policy_files, load_policies
from pipeline.progress import Progress
from pipeline.prompt import PROMPT_VERSION, render_system, request_key
from pipeline.providers import HOSTS
from pipeline.ratecontrol import LIMIT_MARGIN, RateControl, RetryRules, Throttle
from pipeline.readers import InputError, InputSet, open_inputs
from pipeline.records import Policy, Status
from pipeline.report import build_report, write_reports
from pipeline.resume import open_manifest
from pipeline.runlog import JsonProgress, LineStream, RunLog
from pipeline.runner import Run
from pipeline.runstate import RunResult, RunSettings, new_run_id
from pipeline.schemas import response_format
from pipeline.storage import StorageError, StorageSettings, configure
from pipeline.store import NullStore, ResultStore, StoreError
from pipeline.tokens import MESSAGE_OVERHEAD, quick_estimate


class UsageError(Exception):
    """A one-line user mistake found before anything is sent."""


def run_job(config: RunConfig, *, stream: TextIO | None = None, transport: Transport | None = None,
            progress: bool | None = None) -> int:
    """Run one moderation job and return its exit code (see `pipeline.exitcodes`)."""
    return asyncio.run(run_job_async(config, stream=stream, transport=transport, progress=progress))


async def run_job_async(config: RunConfig, *, stream: TextIO | None = None, transport: Transport | None = None,
                        progress: bool | None = None) -> int:
    """`run_job` inside a running event loop (tests run the simulator on the same loop)."""
    log = RunLog(stream if stream is not None else sys.stderr, fmt=config.log_format,
                 secret=os.environ.get(config.api_key_env))
    try:
        return await _run_job(config, log=log, transport=transport, progress=progress)
    except (UsageError, ConfigError, InputError, PolicyError, PricingError, StoreError, StorageError,
            CanaryError) as exc:
        log.say("error", f"moderate: error: {exc}", exit_code=exitcodes.EXIT_USAGE)
        return exitcodes.EXIT_USAGE
    except OutputDirError as exc:
        code = exitcodes.EXIT_LOCKED if exc.locked else exitcodes.EXIT_USAGE
        log.say("error", f"moderate: error: {exc}", exit_code=code)
        return code


@dataclass(slots=True)
class Job:
    """What a run needs before anything is opened: checked inputs, policies, prices, model, key."""

    config: RunConfig
    inputs: InputSet
    plans: list[PolicyPlan]
    pricing: Pricing
    model: str
    api_key: str | None


def open_job(config: RunConfig, *, transport: Transport | None = None) -> Job:
    """Check the inputs, policies, prices and key of a job; raises the one-line errors of a user mistake."""
    if not config.inputs:
        raise UsageError("no input: pass --input PATH (file, folder or glob) or set [input] paths")
    configure(StorageSettings(config.storage_endpoint_url, config.storage_timeout, config.storage_lock))
    if clash := sorted(COLUMN_NAMES.intersection(config.keep_columns)):
        raise UsageError(f"--keep-columns: {', '.join(clash)} is a label column already (docs/output.md)")
    inputs = open_inputs(config.inputs, text_column=config.text_column, id_column=config.id_column,
                         limit=config.limit, keep_columns=config.keep_columns)
    policies = load_policies(config.policies or builtin_policy_files())
    simulated = config.provider == "simulator"
    model = config.model if not simulated or "simulator" in config.model else SIMULATOR_MODEL
    pricing = lookup_pricing(provider=config.provider, model=model, input_per_million=config.input_per_million,
                             cached_input_per_million=config.cached_input_per_million,
                             output_per_million=config.output_per_million)
    api_key = os.environ.get(config.api_key_env) or None
    if api_key is None and HOSTS[config.provider].needs_key and transport is None:
        raise UsageError(f"no API key: set the environment variable {config.api_key_env}")
    plans = [_policy_plan(i, p, config, model) for i, p in enumerate(policies)]
    check_context_room(config, {p.policy.name: p.system_tokens for p in plans})
    return Job(config, inputs, plans, pricing, model, api_key)


async def _run_job(config: RunConfig, *, log: RunLog, transport: Transport | None,
                   progress: bool | None) -> int:
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
        manifest = open_manifest(outdir, _identity(config, inputs, plans, model), shard_rows=config.shard_rows,
                                 force=bool(config.force), store=store)
        if manifest.finished:
            return _nothing_to_do(store, manifest, outdir, pricing, config, model, log)
        async with contextlib.AsyncExitStack() as stack:
            endpoint = await open_endpoint(stack, config, api_key=api_key, transport=transport,
                                           stream=LineStream(log) if log.json else log.stream)
            total = _total(inputs, plans, rate)
            meter = JsonProgress(log, total=total, interval=config.log_interval) if log.json else \
                Progress(total=total, enabled=progress, stream=log.stream)
            run = build_run(config, inputs=inputs, plans=plans, endpoint=endpoint, store=store, outdir=outdir,
                             manifest=manifest, pricing=pricing, api_key=api_key, model=model, log=log,
                             progress=meter, sample=sample,  # type: ignore[arg-type]
                             canaries=canary_slots(canaries, [p.policy.name for p in plans]))
            log.event("start", **start_fields(run, config, inputs, rate, len(canaries)))
            result = await _execute(run, store, log)
        if canaries:
            result.canaries_wrong = finish_canaries(outdir.path, canaries, run.canary_answers, run.settings.run_id)
        return _finish(run, result, store, manifest, outdir, pricing, config, model, log)
    finally:
        outdir.unlock()


async def _execute(run: Run, store: ResultStore, log: RunLog) -> RunResult:
    started_at = time.time()
    store.record_run(_run_row(run, started_at, "running"))
    handlers = _Signals(run, store, log)
    try:
        result = await run.execute()
    except BaseException:
        # an unreadable input mid-run, a bug: keep what was answered and billed
        store.record_run(_run_row(run, started_at, "failed"))
        with contextlib.suppress(StoreError):
            store.close()
        raise
    finally:
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
            pricing: Pricing, config: RunConfig, model: str, log: RunLog) -> int:
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
        return _cannot_write(outdir, exc, log)
    code = exit_code(result, report)
    line = summary_line(result, report, policies=len(run.plans), labels_dir=outdir.labels,
                        report_path=outdir.path / "cost_report.md", simulated=config.provider == "simulator")
    if notes := summary_notes(report):
        line += f"; {notes}"
    if report["duplicate_ids"]:
        log.say("warning", f"moderate: warning: {report['duplicate_ids']:,} rows share an id with another row "
                "(each is labelled on its own; join on row_number)", duplicate_ids=report["duplicate_ids"])
    if result.write_error:
        log.say("error", f"moderate: error: {result.write_error}; answers paid for are kept in the store: free "
                "some space and run the same command to resume")
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
    return code


def _nothing_to_do(store: ResultStore, manifest: Manifest, outdir: OutputDir, pricing: Pricing,
                   config: RunConfig, model: str, log: RunLog) -> int:
    try:
        report = _reports(store, manifest, outdir, pricing, config, model)
    except OSError as exc:
        return _cannot_write(outdir, exc, log)
    finally:
        store.close()
    bad = problems(report)
    code = exitcodes.EXIT_ROWS_FAILED if bad else exitcodes.EXIT_OK
    log.say("finish", f"moderate: nothing to do: {outdir.path} is complete ({manifest.total_rows} rows"
            + (f", {bad} labels not ok: --force retries them, cached answers are reused" if bad else "")
            + f"); report in {outdir.path / 'cost_report.md'}", outcome="nothing_to_do", exit_code=code,
            out=str(outdir.path), **finish_fields(report))
    return code


def call_settings(config: RunConfig, *, model: str, api_key: str | None) -> CallSettings:
    """What every request of this job carries (the body and the call), as `run` sends it."""
    provider = "openai" if config.provider == "simulator" else config.provider
    structured = response_format(config.output_format) if config.response_format == "json_schema" else None
    return CallSettings(
        provider=provider, model=model, reasoning_effort=config.reasoning_effort, max_tokens=config.max_tokens,
        request_timeout=config.request_timeout, keep_reasoning=config.keep_reasoning, api_key=api_key,
        response_format=structured)


def _open_store(config: RunConfig, outdir: OutputDir) -> ResultStore:
    own = Path(outdir.default_store())
    if config.store != "none":
        return ResultStore(config.store or str(own))
    if own.exists():
        raise UsageError(f"{outdir.path} keeps the answers it paid for and what it spent in {own.name}: "
                         "--store none would pay for them again and forget that spend; drop --store none, "
                         "or use a new --out")
    return NullStore()


def _cannot_write(outdir: OutputDir, exc: OSError, log: RunLog) -> int:
    log.say("error", f"moderate: error: cannot write the report in {outdir.path}: {exc.strerror or exc}; answers "
            "paid for are kept in the store: free some space and run the same command to resume",
            exit_code=exitcodes.EXIT_USAGE)
    return exitcodes.EXIT_USAGE


def build_run(config: RunConfig, *, inputs: InputSet, plans: list[PolicyPlan], endpoint: Endpoint,
              store: ResultStore, outdir: OutputDir, manifest: Manifest, pricing: Pricing, api_key: str | None,
              model: str, log: RunLog, progress: Progress | None, sample: Callable[[int], bool] | None = None,
              canaries: list[tuple[int, int, str]] | None = None, control: Throttle | None = None,
              run_id: str | None = None, first_row: int = 0, manifest_file: bool = True) -> Run:
    """A `Run` of ``config``; a cluster worker passes its leased ``control``, the run's id and its shard."""
    judge = Judge(transport=endpoint.transport, settings=call_settings(config, model=model, api_key=api_key))

    def on_pause(seconds: float, why: str) -> None:  # one line each, terminal or not
        log.say("pause", f"moderate: pausing all requests for {seconds:.0f} s: {why}", seconds=round(seconds, 1),
                reason=why)

    def on_long_retry(seconds: float, why: str) -> None:
        log.say("pause", f"moderate: requests wait up to {seconds:.0f} s before their retry: {why}",
                seconds=round(seconds, 1), reason=why)

    if control is None:
        control = RateControl(rpm=config.rpm or None, tpm=config.tpm or None, adaptive=config.adaptive,
                              margin=LIMIT_MARGIN, max_retry_after=config.max_retry_after, on_pause=on_pause,
                              on_long_retry=on_long_retry)
    rules = RetryRules(max_attempts=config.max_attempts, max_refusals=config.max_refusals,
                       invalid_output_retries=config.invalid_output_retries,
                       max_tokens_cap=config.max_tokens_cap, max_retry_after=config.max_retry_after)
    billing = store.billing(manifest.out_id)
    spent = sum(b["cost_usd"] if b.get("charged_usd") is None else b["charged_usd"] for b in billing)
    settings = RunSettings(
        out_id=manifest.out_id, run_id=run_id or new_run_id(), model=model, reasoning_effort=config.reasoning_effort,
        output_format=config.output_format.value, too_long=config.too_long,
        concurrency=worker_count(config.concurrency, inputs.total_rows, len(plans)),
        max_tokens=config.max_tokens, keep_reasoning=config.keep_reasoning, grace_seconds=config.grace_seconds,
        shard_rows=manifest.shard_rows, first_row=first_row,
    )
    run = Run(inputs=inputs, plans=plans, judge=judge, control=control, rules=rules, pricing=pricing,
              budget=Budget(config.max_cost, spent=spent), store=store, outdir=outdir, manifest=manifest,
              settings=settings, progress=progress, sample=sample, canaries=canaries or (),
              manifest_file=manifest_file)
    run.dispatcher.gate = endpoint.gate
    run.dispatcher.cached_count_toward_tpm = HOSTS[config.provider].cached_tokens_count_toward_tpm
    return run


def worker_count(concurrency: int, rows: int | None, policies: int) -> int:
    """As many workers as connections, but never more than there are requests to make.

    >>> worker_count(100_000, 5, 2)
    10
    """
    if rows is None:
        return concurrency
    return max(1, min(concurrency, rows * policies))


def _policy_plan(index: int, policy: Policy, config: RunConfig, model: str) -> PolicyPlan:
    system = render_system(policy, config.output_format)
    key = request_key(model=model, system=system, reasoning_effort=config.reasoning_effort,
                      output_format=config.output_format, structured=config.response_format == "json_schema")
    return make_policy_plan(index, policy, system=system, key=key,
                            system_tokens=quick_estimate(system) + MESSAGE_OVERHEAD,
                            context_tokens=config.context_tokens, max_tokens=config.max_tokens)


def _identity(config: RunConfig, inputs: InputSet, plans: list[PolicyPlan], model: str) -> dict:
    """What makes an output directory: resuming with anything else would mix two jobs."""
    identity = {
        "input": inputs.identity(),
        "limit": config.limit,
        "policies": [f"{p.policy.name}@{p.policy.version}" for p in plans],
        "model": model,
        "reasoning_effort": config.reasoning_effort,
        "output_format": config.output_format.value,
        "prompt_version": PROMPT_VERSION,
    }
    if config.response_format != "text":  # absent by default, so existing directories still resume
        identity["response_format"] = config.response_format
    if config.keep_columns:  # the shards' columns
        identity["keep_columns"] = config.keep_columns
    if config.sample is not None:  # another sample is another job
        identity["sample"] = {"sample": config.sample, "seed": config.seed}
    return identity


def _reports(store: ResultStore, manifest: Manifest, outdir: OutputDir, pricing: Pricing, config: RunConfig,
             model: str) -> dict:
    report = build_report(billing=store.billing(manifest.out_id), runs=store.runs(manifest.out_id),
                          labels_dir=outdir.labels, pricing=pricing, provider=config.provider, model=model)
    extend_report(report, out=outdir.path, manifest=manifest, config=config,
                  rates=store.rates(manifest.out_id, history=config.drift_runs))
    write_reports(report, outdir.path)
    if outdir.local:  # the HTML report reads the shards from a local folder
        from pipeline.htmlreport import write_html_report  # polars and numpy only for the end of a run

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


class _Signals:
    """SIGINT/SIGTERM while a run executes: the first drains, the second exits at once (130)."""

    def __init__(self, run: Run, store: ResultStore, log: RunLog) -> None:
        self.run, self.store, self.log = run, store, log
        self.count = 0
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.count += 1
        if self.count == 1:
            self.run.request_stop(Status.INTERRUPTED)
            self.log.say("signal", f"moderate: {sig.name} received: finishing calls in flight (up to "
                         f"{self.run.settings.grace_seconds:g} s); send it again to stop at once", signal=sig.name)
            return
        # Second signal: stop now. Answers already received are committed to the store; shards on
        # disk are whole; the next run resumes from there.
        self.log.say("signal", f"moderate: {sig.name} received again: stopping now; run the same command to "
                     "resume", signal=sig.name)
        with contextlib.suppress(Exception):
            self.store.close()
        os._exit(exitcodes.EXIT_INTERRUPTED)


#: how `run` plans a policy and names a job, shared with the batch commands (`pipeline.batch`).
policy_plan = _policy_plan
job_identity = _identity
