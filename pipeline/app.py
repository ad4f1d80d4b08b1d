"""Assembles a run from a `RunConfig`: opens everything, runs, reports, picks the exit code.

Every mistake a user can make ends here as one line on stderr and an exit code; tracebacks are
kept for bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import TextIO

from pipeline import exitcodes
from pipeline.client import AiohttpTransport, Transport
from pipeline.config import RunConfig
from pipeline.cost import Pricing, PricingError, lookup_pricing
from pipeline.judge import CallSettings, Judge
from pipeline.outdir import Manifest, OutputDir, OutputDirError, open_output_dir
from pipeline.plan import PolicyPlan, RunSettings, make_plan, new_run_id
from pipeline.policies import PolicyError, builtin_policy_dir, load_policies
from pipeline.progress import Progress
from pipeline.prompt import PROMPT_VERSION, render_system, request_key
from pipeline.providers import DEFAULT_BASE_URLS, chat_url, request_headers
from pipeline.readers import InputError, InputSet, open_inputs
from pipeline.records import Policy, Status
from pipeline.report import build_report, write_reports
from pipeline.runner import Run
from pipeline.storage import StorageError, StorageSettings, configure
from pipeline.store import NullStore, ResultStore, StoreError
from pipeline.throttle import LIMIT_MARGIN, Throttle
from pipeline.tokens import MESSAGE_OVERHEAD, quick_estimate

SIMULATOR_MODEL = "gpt-oss-safeguard-20b-simulator"
_PROBLEM_STATUSES = (Status.FAILED, Status.INVALID_OUTPUT, Status.TRUNCATED, Status.REJECTED, Status.INPUT_ERROR)


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
    except (UsageError, InputError, PolicyError, PricingError, StoreError, StorageError) as exc:
        print(f"moderate: error: {exc}", file=stream)
        return exitcodes.EXIT_USAGE
    except OutputDirError as exc:
        print(f"moderate: error: {exc}", file=stream)
        return exitcodes.EXIT_LOCKED if "another run" in str(exc) else exitcodes.EXIT_USAGE


async def _run_job(config: RunConfig, *, stream: TextIO, transport: Transport | None,
                   progress: bool | None) -> int:
    if not config.inputs:
        raise UsageError("no input: pass --input PATH (file, folder or glob) or set [input] paths")
    configure(StorageSettings(config.storage_endpoint_url, config.storage_timeout, config.storage_lock))
    inputs = open_inputs(config.inputs, text_column=config.text_column, id_column=config.id_column,
                         limit=config.limit)
    policies = load_policies(config.policies or sorted(builtin_policy_dir().glob("*.md")))
    simulated = config.provider == "simulator"
    model = config.model if not simulated or "simulator" in config.model else SIMULATOR_MODEL
    pricing = lookup_pricing(provider=config.provider, model=model,
                             input_per_million=config.input_per_million,
                             cached_input_per_million=config.cached_input_per_million,
                             output_per_million=config.output_per_million)
    api_key = os.environ.get(config.api_key_env) or None
    if api_key is None and config.provider in ("openrouter", "groq", "modelslab") and transport is None:
        raise UsageError(f"no API key: set the environment variable {config.api_key_env}")
    plans = [_plan(i, p, config, model) for i, p in enumerate(policies)]
    identity = _identity(config, inputs, plans, model)

    outdir = open_output_dir(config.out)
    outdir.lock()
    try:
        store = _open_store(config, outdir)
        manifest = _open_manifest(outdir, identity, config, store)
        if manifest.finished:
            report = _finish_reports(store, manifest, outdir, pricing, config.provider, model)
            problems = sum(report["statuses"].get(s.value, 0) for s in _PROBLEM_STATUSES)
            print(f"moderate: nothing to do: {outdir.path} is complete ({manifest.total_rows} rows"
                  + (f", {problems} labels not ok: --force retries them, cached answers are reused"
                     if problems else "") + f"); report in {outdir.path / 'cost_report.md'}", file=stream)
            return exitcodes.EXIT_ROWS_FAILED if problems else exitcodes.EXIT_OK
        async with contextlib.AsyncExitStack() as stack:
            base_url = config.base_url or DEFAULT_BASE_URLS.get(config.provider)
            if simulated:
                from pipeline.simulator import SimulatorConfig, start_simulator
                from pipeline.simulator.config import Faults

                sim_config = SimulatorConfig(latency_ms=config.simulator_latency_ms,
                                             jitter_ms=config.simulator_jitter_ms,
                                             faults=Faults.transient(config.simulator_fault_rate))
                sim = await stack.enter_async_context(start_simulator(sim_config))
                base_url = sim.base_url
                print(f"moderate: using the built-in SIMULATOR at {base_url} (not a model: verdicts "
                      "come from a keyword rule)", file=stream)
            if transport is None:
                transport = await stack.enter_async_context(AiohttpTransport(
                    url=chat_url(base_url or ""), headers=request_headers(config.provider, api_key),
                    connections=config.concurrency))
            run = _build_run(config, inputs=inputs, plans=plans, transport=transport, store=store,
                             outdir=outdir, manifest=manifest, pricing=pricing, api_key=api_key, model=model,
                             progress=Progress(total=_total(inputs, plans), enabled=progress, stream=stream))
            started_at = time.time()
            store.record_run(_run_row(run, started_at, "running"))
            try:
                await run.execute()
            except BaseException:
                # an unreadable input mid-run, a bug: keep what was answered and billed
                store.record_run(_run_row(run, started_at, "failed"))
                with contextlib.suppress(StoreError):
                    store.close()
                raise
            finally:
                if run.progress:
                    run.progress.close()
        outcome = _outcome(run)
        store.record_run(_run_row(run, started_at, outcome))
        store.close()
        if run.store_error:
            raise StoreError(run.store_error)
        if run.stop_status is None and all(s.complete for s in manifest.shards.values()):
            manifest.finished = True
            manifest.total_rows = run.rows_read
            outdir.write_manifest(manifest)
        report = _finish_reports(store, manifest, outdir, pricing, config.provider, model)
        print(_summary(run, report, outdir, outcome, simulated), file=stream)
        if report["duplicate_ids"]:
            print(f"moderate: warning: {report['duplicate_ids']:,} rows share an id with another row "
                  "(each is labelled on its own; join on row_number)", file=stream)
        if run.fatal_error:
            print(f"moderate: error: the endpoint refused the run: {run.fatal_error}", file=stream)
        return _exit_code(run, report)
    finally:
        outdir.unlock()


def _build_run(config: RunConfig, *, inputs: InputSet, plans: list[PolicyPlan], transport: Transport,
               store: ResultStore, outdir: OutputDir, manifest: Manifest, pricing: Pricing,
               api_key: str | None, model: str, progress: Progress) -> Run:
    settings = CallSettings(
        provider="openai" if config.provider == "simulator" else config.provider, model=model,
        reasoning_effort=config.reasoning_effort, max_tokens=config.max_tokens,
        max_tokens_cap=config.max_tokens_cap, request_timeout=config.request_timeout,
        max_attempts=config.max_attempts, invalid_output_retries=config.invalid_output_retries,
        keep_reasoning=config.keep_reasoning, api_key=api_key,
    )
    throttle = Throttle(rpm=config.rpm or None, tpm=config.tpm or None, adaptive=config.adaptive,
                        margin=LIMIT_MARGIN)
    judge = Judge(transport=transport, throttle=throttle, settings=settings, pricing=pricing)

    def estimate_call_usd(plan: PolicyPlan, user: str, mean_completion: float) -> float:
        prompt = plan.system_tokens + quick_estimate(user) + 2 * MESSAGE_OVERHEAD
        return pricing.estimate(prompt_tokens=prompt, completion_tokens=int(mean_completion))

    run_settings = RunSettings(
        out_id=manifest.out_id, run_id=new_run_id(), model=model, reasoning_effort=config.reasoning_effort,
        output_format=config.output_format.value, concurrency=config.concurrency, too_long=config.too_long,
        max_cost=config.max_cost, spent_before=sum(b["cost_usd"] for b in store.billing(manifest.out_id)),
        grace_seconds=config.grace_seconds, shard_rows=manifest.shard_rows,
        estimate_call_usd=estimate_call_usd,
    )
    return Run(inputs=inputs, plans=plans, judge=judge, store=store, outdir=outdir, manifest=manifest,
               settings=run_settings, progress=progress)


def _plan(index: int, policy: Policy, config: RunConfig, model: str) -> PolicyPlan:
    system = render_system(policy, config.output_format)
    key = request_key(model=model, system=system, reasoning_effort=config.reasoning_effort,
                      output_format=config.output_format)
    return make_plan(index, policy, system=system, key=key, system_tokens=quick_estimate(system) + MESSAGE_OVERHEAD,
                     context_tokens=config.context_tokens, max_tokens=config.max_tokens)


def _identity(config: RunConfig, inputs: InputSet, plans: list[PolicyPlan], model: str) -> dict:
    """What makes an output directory: resuming with anything else would mix two jobs."""
    return {
        "input": inputs.identity(),
        "limit": config.limit,
        "policies": [f"{p.policy.name}@{p.policy.version}" for p in plans],
        "model": model,
        "reasoning_effort": config.reasoning_effort,
        "output_format": config.output_format.value,
        "prompt_version": PROMPT_VERSION,
    }


def _open_store(config: RunConfig, outdir: OutputDir) -> ResultStore:
    if config.store == "none":
        return NullStore()
    return ResultStore(config.store or outdir.default_store())


def _open_manifest(outdir: OutputDir, identity: dict, config: RunConfig, store: ResultStore) -> Manifest:
    try:
        existing = outdir.read_manifest()
    except OutputDirError:
        if not config.force:
            raise
        outdir.clear()  # --force starts over even from an unreadable manifest
        existing = None
    if existing is not None and existing.identity != identity:
        if not config.force:
            changed = ", ".join(k for k in identity if existing.identity.get(k) != identity[k])
            raise OutputDirError(f"{outdir.path} holds a run with other settings ({changed} changed); "
                                 "use a new --out, or --force to start it over (cached answers are reused)")
        store.forget_output(existing.out_id)
        outdir.clear()
        existing = None
    elif existing is not None and config.force:
        store.forget_output(existing.out_id)
        outdir.clear()
        existing = None
    if existing is None:
        outdir.clear()
        return outdir.new_manifest(identity=identity, shard_rows=config.shard_rows)
    outdir.remove_stale_temp_files()
    return existing


def _finish_reports(store: ResultStore, manifest: Manifest, outdir: OutputDir, pricing: Pricing,
                    provider: str, model: str) -> dict:
    report = build_report(billing=store.billing(manifest.out_id), runs=store.runs(manifest.out_id),
                          labels_dir=outdir.labels, pricing=pricing, provider=provider, model=model)
    write_reports(report, outdir.path)
    return report


def _total(inputs: InputSet, plans: list[PolicyPlan]) -> int | None:
    return None if inputs.total_rows is None else inputs.total_rows * len(plans)


def _outcome(run: Run) -> str:
    if run.fatal_error:
        return "aborted"
    if run.stop_status is Status.BUDGET_EXHAUSTED:
        return "budget_exhausted"
    if run.stop_status is Status.INTERRUPTED:
        return "interrupted"
    return "finished"


def _exit_code(run: Run, report: dict) -> int:
    if run.fatal_error:
        return exitcodes.EXIT_ENDPOINT
    if run.stop_status is Status.BUDGET_EXHAUSTED:
        return exitcodes.EXIT_BUDGET
    if run.stop_status is Status.INTERRUPTED:
        return exitcodes.EXIT_INTERRUPTED
    # the whole directory counts, shards finished by earlier runs included
    if any(report["statuses"].get(s.value, 0) for s in _PROBLEM_STATUSES):
        return exitcodes.EXIT_ROWS_FAILED
    return exitcodes.EXIT_OK


def _run_row(run: Run, started_at: float, outcome: str) -> dict:
    s = run.stats
    return {"run_id": run.settings.run_id, "out_id": run.settings.out_id, "started_at": started_at,
            "ended_at": time.time(), "outcome": outcome, "labels": s.labels, "sent": s.sent,
            "store_hits": s.store_hits, "duplicates": s.duplicates,
            "elapsed_s": round(run.elapsed, 3)}


def _summary(run: Run, report: dict, outdir: OutputDir, outcome: str, simulated: bool) -> str:
    s = run.stats
    elapsed = run.elapsed or 1e-9
    statuses = " ".join(f"{k}={v}" for k, v in sorted(s.statuses.items()))
    prefix = "moderate [SIMULATOR]" if simulated else "moderate"
    seconds = f"{elapsed:.1f}" if elapsed >= 1 else f"{elapsed:.2f}"
    return (f"{prefix}: {outcome}: {s.labels:,} labels ({len(run.plans)} policies) in {seconds} s "
            f"({s.labels / elapsed:,.0f} labels/s); {s.sent:,} calls, {s.store_hits:,} from store, "
            f"{s.duplicates:,} duplicates; this run ${s.spent_usd:.4f}, directory total "
            f"${report['cost_usd']:.4f}; {statuses or 'no labels'}; shards in {outdir.labels}, "
            f"report in {outdir.path / 'cost_report.md'}")


#: how `run` plans a policy and names a job, shared with the batch commands (`pipeline.batch`).
policy_plan = _plan
job_identity = _identity
