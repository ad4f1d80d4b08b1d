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
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pipeline import exitcodes
from pipeline.budget import Budget
from pipeline.client import Transport
from pipeline.config import ConfigError, RunConfig, check_context_room
from pipeline.cost import Pricing, PricingError, lookup_pricing
from pipeline.ending import exit_code, outcome_word, problems, summary_line
from pipeline.endpoints import SIMULATOR_MODEL, Endpoint, open_endpoint
from pipeline.htmlreport import write_html_report
from pipeline.judge import CallSettings, Judge
from pipeline.outdir import Manifest, OutputDir, OutputDirError
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
from pipeline.runner import Run
from pipeline.runstate import RunResult, RunSettings, new_run_id
from pipeline.schemas import response_format
from pipeline.store import NullStore, ResultStore, StoreError
from pipeline.tokens import MESSAGE_OVERHEAD, count_tokens


class UsageError(Exception):
    """A one-line user mistake found before anything is sent."""


def run_job(config: RunConfig, *, stream: TextIO | None = None, transport: Transport | None = None,
            progress: bool | None = None) -> int:
    """Run one moderation job and return its exit code (see `pipeline.exitcodes`)."""
    return asyncio.run(run_job_async(config, stream=stream, transport=transport, progress=progress))


async def run_job_async(config: RunConfig, *, stream: TextIO | None = None, transport: Transport | None = None,
                        progress: bool | None = None) -> int:
    """`run_job` inside a running event loop (tests run the simulator on the same loop)."""
    stream = stream if stream is not None else sys.stderr
    try:
        return await _run_job(config, stream=stream, transport=transport, progress=progress)
    except (UsageError, ConfigError, InputError, PolicyError, PricingError, StoreError) as exc:
        print(f"moderate: error: {exc}", file=stream)
        return exitcodes.EXIT_USAGE
    except OutputDirError as exc:
        print(f"moderate: error: {exc}", file=stream)
        return exitcodes.EXIT_LOCKED if exc.locked else exitcodes.EXIT_USAGE


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
    inputs = open_inputs(config.inputs, text_column=config.text_column, id_column=config.id_column,
                         limit=config.limit)
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


async def _run_job(config: RunConfig, *, stream: TextIO, transport: Transport | None,
                   progress: bool | None) -> int:
    job = open_job(config, transport=transport)
    inputs, plans, pricing, model, api_key = job.inputs, job.plans, job.pricing, job.model, job.api_key
    outdir = OutputDir(config.out)
    outdir.lock()
    try:
        store = NullStore() if config.store == "none" else ResultStore(config.store or outdir.path / "store.sqlite")
        manifest = open_manifest(outdir, job_identity(job), shard_rows=config.shard_rows,
                                 force=bool(config.force), store=store)
        if manifest.finished:
            return _nothing_to_do(store, manifest, outdir, pricing, config, model, stream)
        async with contextlib.AsyncExitStack() as stack:
            endpoint = await open_endpoint(stack, config, api_key=api_key, transport=transport, stream=stream)
            run = build_run(config, inputs=inputs, plans=plans, endpoint=endpoint, store=store, outdir=outdir,
                             manifest=manifest, pricing=pricing, api_key=api_key, model=model, stream=stream,
                             progress=Progress(total=_total(inputs, plans), enabled=progress, stream=stream))
            result = await _execute(run, store, stream)
        return _finish(run, result, store, manifest, outdir, pricing, config, model, stream)
    finally:
        outdir.unlock()


async def _execute(run: Run, store: ResultStore, stream: TextIO) -> RunResult:
    started_at = time.time()
    store.record_run(_run_row(run, started_at, "running"))
    handlers = _Signals(run, store, stream)
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
    try:
        store.close()
    except StoreError as exc:
        result.write_error = result.write_error or str(exc)
    return result


def _finish(run: Run, result: RunResult, store: ResultStore, manifest: Manifest, outdir: OutputDir,
            pricing: Pricing, config: RunConfig, model: str, stream: TextIO) -> int:
    expected_shards = -(-result.rows_read // manifest.shard_rows) if result.input_exhausted else -1
    complete = sum(1 for s in manifest.shards.values() if s.complete)
    if result.stop_status is None and not result.write_error and complete == expected_shards \
            and not result.internal_error:
        manifest.finished = True
        manifest.total_rows = result.rows_read
        outdir.write_manifest(manifest)
    report = _reports(store, manifest, outdir, pricing, config, model)
    print(summary_line(result, report, policies=len(run.plans), labels_dir=outdir.labels,
                       report_path=Path(outdir.path) / "cost_report.md", simulated=config.provider == "simulator"),
          file=stream)
    if report["duplicate_ids"]:
        print(f"moderate: warning: {report['duplicate_ids']:,} rows share an id with another row "
              "(each is labelled on its own; join on row_number)", file=stream)
    if result.write_error:
        print(f"moderate: error: {result.write_error}; answers paid for are kept in the store: free some "
              "space and run the same command to resume", file=stream)
    elif result.fatal_error:
        print(f"moderate: error: the endpoint refused the run: {result.fatal_error}", file=stream)
    if result.internal_error:
        print(result.internal_traceback or "", end="", file=stream)
        print(f"moderate: internal error (a bug) on {result.stats.internal_errors:,} rows, which are marked "
              f"failed: {result.internal_error}; please report it with the traceback above", file=stream)
    return exit_code(result, report)


def _nothing_to_do(store: ResultStore, manifest: Manifest, outdir: OutputDir, pricing: Pricing,
                   config: RunConfig, model: str, stream: TextIO) -> int:
    report = _reports(store, manifest, outdir, pricing, config, model)
    store.close()
    bad = problems(report)
    print(f"moderate: nothing to do: {outdir.path} is complete ({manifest.total_rows} rows"
          + (f", {bad} labels not ok: --force retries them, cached answers are reused" if bad else "")
          + f"); report in {outdir.path / 'cost_report.md'}", file=stream)
    return exitcodes.EXIT_ROWS_FAILED if bad else exitcodes.EXIT_OK


def build_run(config: RunConfig, *, inputs: InputSet, plans: list[PolicyPlan], endpoint: Endpoint,
              store: ResultStore, outdir: OutputDir, manifest: Manifest, pricing: Pricing, api_key: str | None,
              model: str, stream: TextIO, progress: Progress | None, control: Throttle | None = None,
              run_id: str | None = None, first_row: int = 0, manifest_file: bool = True) -> Run:
    """A `Run` of ``config``; a cluster worker passes its leased ``control``, the run's id and its shard."""
    provider = "openai" if config.provider == "simulator" else config.provider
    structured = response_format(config.output_format) if config.response_format == "json_schema" else None
    judge = Judge(transport=endpoint.transport, settings=CallSettings(
        provider=provider, model=model, reasoning_effort=config.reasoning_effort, max_tokens=config.max_tokens,
        request_timeout=config.request_timeout, keep_reasoning=config.keep_reasoning, api_key=api_key,
        response_format=structured))

    def on_pause(seconds: float, why: str) -> None:  # one line each, terminal or not
        print(f"moderate: pausing all requests for {seconds:.0f} s: {why}", file=stream, flush=True)

    if control is None:
        control = RateControl(rpm=config.rpm or None, tpm=config.tpm or None, adaptive=config.adaptive,
                              margin=LIMIT_MARGIN, max_retry_after=config.max_retry_after, on_pause=on_pause)
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
              settings=settings, progress=progress, manifest_file=manifest_file)
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
                            system_tokens=count_tokens(system) + MESSAGE_OVERHEAD,
                            context_tokens=config.context_tokens, max_tokens=config.max_tokens)


def job_identity(job: Job) -> dict:
    """What makes an output directory: resuming with anything else would mix two jobs."""
    config, inputs, plans, model = job.config, job.inputs, job.plans, job.model
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
    return identity


def _reports(store: ResultStore, manifest: Manifest, outdir: OutputDir, pricing: Pricing, config: RunConfig,
             model: str) -> dict:
    report = build_report(billing=store.billing(manifest.out_id), runs=store.runs(manifest.out_id),
                          labels_dir=outdir.labels, pricing=pricing, provider=config.provider, model=model)
    write_reports(report, outdir.path)
    write_html_report(outdir.path, text_column=config.text_column, id_column=config.id_column)
    return report


def _total(inputs: InputSet, plans: list[PolicyPlan]) -> int | None:
    return None if inputs.total_rows is None else inputs.total_rows * len(plans)


def _run_row(run: Run, started_at: float, outcome: str) -> dict:
    s = run.stats
    return {"run_id": run.settings.run_id, "out_id": run.settings.out_id, "started_at": started_at,
            "ended_at": time.time(), "outcome": outcome, "labels": s.labels, "sent": s.sent,
            "store_hits": run.planner.store_hits, "duplicates": run.planner.duplicates,
            "elapsed_s": round(run.result.elapsed, 3)}


class _Signals:
    """SIGINT/SIGTERM while a run executes: the first drains, the second exits at once (130)."""

    def __init__(self, run: Run, store: ResultStore, stream: TextIO) -> None:
        self.run, self.store, self.stream = run, store, stream
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
            print(f"moderate: {sig.name} received: finishing calls in flight (up to "
                  f"{self.run.settings.grace_seconds:g} s); send it again to stop at once",
                  file=self.stream, flush=True)
            return
        # Second signal: stop now. Answers already received are committed to the store; shards on
        # disk are whole; the next run resumes from there.
        print(f"moderate: {sig.name} received again: stopping now; run the same command to resume",
              file=self.stream, flush=True)
        with contextlib.suppress(Exception):
            self.store.close()
        os._exit(exitcodes.EXIT_INTERRUPTED)
