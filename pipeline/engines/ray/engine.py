"""The driver of `moderate run --engine ray`: plan the shards, label them on Ray, report.

The driver checks the job as the local engine does (`pipeline.engines.job.open_job`), takes the output
directory's lock and manifest, and sends every shard not yet complete to the cluster. As each
shard's summary comes back it lists the shard in the manifest (only the driver writes it). At the
end it writes the cost report and the HTML report from the billing of every shard's store.
"""

from __future__ import annotations

import _thread
import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from pipeline.config.settings import RunConfig, run_secrets
from pipeline.core import exitcodes
from pipeline.core.errors import UserError, exit_code_for
from pipeline.core.records import Status
from pipeline.engines.alerting import alert_after_error, alert_after_run
from pipeline.engines.ending import Ending, outcome_word
from pipeline.engines.job import UsageError, job_identity, open_job
from pipeline.engines.progress import Progress
from pipeline.engines.ray.labeller import ShardSpec, ShardSummary
from pipeline.engines.ray.ledger import ClusterLedger, merge_answers
from pipeline.engines.runlog import RunLog
from pipeline.engines.runstate import RunStats, RunTally, new_run_id
from pipeline.engines.session import Session, open_session
from pipeline.output.outdir import ShardInfo
from pipeline.quality.nightly import canary_requests, canary_slots, finish_canaries, sampler

__all__ = ["RAY_MISSING", "run_on_ray"]

#: seconds beyond the grace period that actors get, after a signal, to store their answers and report
STOP_MARGIN_S = 20.0

RAY_MISSING = ("moderate: error: --engine ray needs Ray, which is not installed here: "
               "pip install '.[ray]' in a checkout (or pip install 'moderate[ray]')")


def run_on_ray(config: RunConfig, *, address: str | None = None, actors: int | None = None,
               stream: TextIO | None = None, progress: bool | None = None) -> int:
    """Run ``config`` on the Ray cluster at ``address`` (None: a Ray instance on this machine)."""
    stream = stream if stream is not None else sys.stderr
    try:
        import ray  # noqa: F401
    except ImportError:
        print(RAY_MISSING, file=stream)
        return exitcodes.EXIT_USAGE
    log = RunLog(stream, fmt=config.log_format, secret=run_secrets(config))
    try:
        ending = _run(config, log=log, address=address, actors=actors, stream=stream, progress=progress)
    except UserError as exc:
        code = exit_code_for(exc)
        log.say("error", f"moderate: error: {exc}", exit_code=code)
        alert_after_error(config, log, exit_code=code, message=str(exc))
        return code
    alert_after_run(config, log, ending)
    return ending.exit_code


def _refuse_unsupported(config: RunConfig) -> None:
    """What the cluster engine cannot do: a one-line refusal rather than a silent difference."""
    if config.endpoints:
        raise UsageError("[[endpoints]]: not available with --engine ray yet (use --engine local)")
    if config.store == "none":
        raise UsageError("--store none: --engine ray keeps each shard's answers in OUT/results/ (its resume log); "
                         "drop --store none")


def _run(config: RunConfig, *, log: RunLog, address: str | None, actors: int | None, stream: TextIO,
         progress: bool | None) -> Ending:
    _refuse_unsupported(config)
    job = open_job(config)
    for warning in job.warnings:
        log.say("warning", warning)
    identity = {**job_identity(config, job.inputs, job.plans, job.model), "engine": "ray"}
    ledger = ClusterLedger(config.out)
    try:
        with open_session(config, job, log=log, store=ledger, identity=identity) as session:
            if session.manifest.finished:
                return session.nothing_to_do()
            return _label(session, address=address, actors=actors, stream=stream, progress=progress)
    finally:
        ledger.close()


#: what reaches an object store, handed from the driver's environment to actors that lack it
STORAGE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
               "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "STORAGE_EMULATOR_HOST",
               "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
               "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ENDPOINT")


def storage_env() -> dict[str, str]:
    return {name: os.environ[name] for name in STORAGE_ENV if os.environ.get(name)}


def _label(session: Session, *, address: str | None, actors: int | None, stream: TextIO,
           progress: bool | None) -> Ending:
    from pipeline.engines.ray import rayside

    job, ledger, manifest, outdir = session.job, session.store, session.manifest, session.outdir
    # one pass over plain JSON Lines files: their rows are counted and each shard's reader seeks to its first row
    unindexed = job.inputs.index_rows()
    total = job.inputs.total_rows
    if total is None:  # compressed JSON Lines, CSV: count once, so shards can be numbered
        total = sum(len(batch) for batch in job.inputs.batches(batch_size=65536))
    if unindexed:
        shown = ", ".join(unindexed[:3]) + (" ..." if len(unindexed) > 3 else "")
        session.log.say("notice", f"moderate: ray: {len(unindexed):,} input files cannot be split ({shown}: compressed "
                        "JSON Lines or CSV): each shard reads them from their start up to its rows; plain JSON "
                        "Lines or Parquet split", unsplit=unindexed)
    try:
        sample, _rate = sampler(job.config, total)
    except ValueError as exc:
        raise UsageError(f"--sample: {exc}") from None
    names = [p.policy.name for p in job.plans]
    canaries, ignored = canary_requests(job.config, names)
    if ignored:
        session.log.say("warning", f"moderate: warning: {ignored:,} canaries are for policies this run does not use "
                        "(not sent)", ignored_canaries=ignored)
    shards = -(-total // manifest.shard_rows)
    todo = [k for k in range(shards) if not ((info := manifest.shards.get(k)) and info.complete)]
    run_id = new_run_id()
    tally = _Tally()
    started_at, started = time.time(), time.monotonic()
    ledger.record_run(_run_row(run_id, manifest.out_id, started_at, "running", tally, 0.0))
    counts: dict[str, int] = {}
    skipped = 0  # shards not begun because another stopped the run
    canary_answers: dict | None = None
    # what the folder spent before this run: the budget's starting point
    spent = sum(b["cost_usd"] if b.get("charged_usd") is None else b["charged_usd"]
                for b in ledger.billing(manifest.out_id)) + manifest.earlier_stores_usd
    with _ray_lines_aside(session.log), rayside.connect(address, log_to_driver=not session.log.json):
        limiter = rayside.start_limiter(job.config, run_id, spent=spent)
        registry = rayside.start_registry(run_id)
        cpus = rayside.cluster_cpus()
        pool = max(1, actors or cpus)
        session.log.say("start", f"moderate: ray: {len(todo):,} of {shards:,} shards to label on "
                        f"{min(pool, max(1, len(todo)))} actors ({job.config.concurrency} connections each)",
                        shards=shards, todo=len(todo), actors=pool, run_id=run_id)
        spec = ShardSpec(job, manifest.out_id, run_id, manifest.shard_rows, storage_env=storage_env(),
                         sample=sample, canaries=canary_slots(canaries, names) if todo else [],
                         canary_shard=todo[0] if todo and canaries else None,
                         shared_store=job.config.store or None)
        left = sum(min(manifest.shard_rows, total - k * manifest.shard_rows) for k in todo) * len(job.plans)
        bar = Progress(total=left, enabled=False if session.log.json else progress, stream=stream)  # shard by shard
        stop = _GracefulStop(lambda: limiter.interrupt.remote(), say=lambda m: session.log.say("interrupted", m),
                             grace=job.config.grace_seconds)
        restore = stop.install()
        try:
            # more actors than CPUs share them: an actor mostly waits for answers
            for summary in rayside.label_shards(spec, todo, limiter=limiter, actors=pool,
                                                cpus_per_actor=min(1.0, cpus / pool)):
                # after a stop, shards under way still report (their files go into the manifest);
                # those not begun come back at once, skipped
                skipped += summary.skipped
                tally.add(summary)
                stats = tally.result.stats
                bar.update(done=stats.labels, tokens=stats.tokens, cost_usd=stats.spent_usd)
                if summary.shard is not None:
                    manifest.shards[summary.index] = ShardInfo(**summary.shard)
                    outdir.write_manifest(manifest)
                if summary.canary_answers is not None:
                    canary_answers = summary.unpack_canaries()
            if stop.signalled.is_set():
                tally.result.stop_status = Status.INTERRUPTED
        except KeyboardInterrupt:  # the actors stop with the driver; their answers are in their stores
            tally.result.stop_status = Status.INTERRUPTED
            session.log.say("interrupted", "moderate: interrupted: stopping the actors; run the same command to "
                            "resume")
        finally:
            restore()
            bar.close()
        counts = rayside.limiter_counts(limiter, registry)
    result = tally.result
    result.elapsed = time.monotonic() - started
    if canaries and canary_answers is not None:
        result.canaries_wrong = finish_canaries(outdir.path, canaries, canary_answers, run_id)
    if job.config.store:
        merge_answers(ledger.stores(), job.config.store)
    result.input_exhausted = True
    session.mark_finished(result, total_rows=total)
    # what this run paid, shards left unfinished included (their answers wait in their stores)
    bills = [b for b in ledger.billing(manifest.out_id) if b["run_id"] == run_id]
    result.stats.spent_usd = sum(b["cost_usd"] if b.get("charged_usd") is None else b["charged_usd"] for b in bills)
    outcome = "failed" if tally.error else outcome_word(result)
    ledger.record_run(_run_row(run_id, manifest.out_id, started_at, outcome, tally, result.elapsed))
    calls = counts.get("calls", 0)
    per_1000 = calls / result.stats.labels * 1000 if result.stats.labels else 0.0
    notes = [f"moderate: ray: the limiter answered {calls:,} lease calls for {counts.get('used', 0):,} requests "
             f"({per_1000:.1f} per 1,000 labels)"]
    rows = result.rows_read or 1
    notes.append(f"moderate: ray: the registry of answers answered {counts.get('copy_calls', 0):,} calls for "
                 f"{result.rows_read:,} rows ({counts.get('copy_calls', 0) / rows * 1000:.1f} per 1,000 rows); "
                 f"{tally.copied:,} labels copied from another shard's answer (paid once)")
    if job.config.max_cost is not None:
        notes.append(f"moderate: ray: the budget answered {counts.get('budget_calls', 0):,} calls")
    if skipped:
        notes.append(f"moderate: ray: {skipped:,} shards not begun (the run was stopped); the next run labels them")
    ending = session.finish(result, run_id=run_id, notes=notes, drift=False)
    if tally.error:
        session.log.say("error", f"moderate: error: {tally.error}; answers paid for are kept in "
                        f"{outdir.path / 'results'}")
        return dataclasses.replace(ending, exit_code=exitcodes.EXIT_USAGE)
    return ending


@contextlib.contextmanager
def _ray_lines_aside(log: RunLog) -> Iterator[None]:
    """With JSON logs on stderr, what Ray's own core prints there (it writes to the file descriptor, not
    through Python) goes to a file instead, so that every line on stderr stays one JSON object."""
    if not log.json or log.stream is not sys.stderr:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    fd, aside = tempfile.mkstemp(prefix="moderate-ray-", suffix=".log")
    os.dup2(fd, 2)
    os.close(fd)
    log.stream = os.fdopen(os.dup(saved), "w")
    try:
        yield
    finally:
        log.stream.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log.stream.close()
        log.stream = sys.stderr
        log.say("notice", f"moderate: ray: Ray's own messages of this run are in {aside}", ray_log=aside)


class _GracefulStop:
    """SIGINT or SIGTERM (even where SIGINT was ignored, as for a background job) stops the run the
    way a local run stops: ``ask`` tells the actors, whose shards under way give their calls in flight
    the grace period and store every answer before they report. A second signal, or actors still busy
    `STOP_MARGIN_S` after the grace period, raise KeyboardInterrupt in the driver."""

    def __init__(self, ask: Callable[[], object], *, say: Callable[[str], None], grace: float) -> None:
        self._ask, self._say, self._grace = ask, say, grace
        self.signalled = threading.Event()
        self._done = threading.Event()

    def install(self) -> Callable[[], None]:
        """Take SIGINT and SIGTERM; returns what puts the previous handlers back."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        threading.Thread(target=self._stop_actors, name="moderate-stop", daemon=True).start()

        def restore() -> None:
            self._done.set()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signalled.is_set():
            raise KeyboardInterrupt
        self.signalled.set()  # Ray is not called from a signal handler: the thread below does it

    def _stop_actors(self) -> None:
        while not self.signalled.wait(0.5):
            if self._done.is_set():
                return
        if self._done.is_set():
            return
        self._ask()
        self._say(f"moderate: interrupted: the actors finish their calls in flight (up to {self._grace:.0f} s) "
                  "and keep every answer; run the same command to resume (a second signal stops at once)")
        if not self._done.wait(self._grace + STOP_MARGIN_S):
            _thread.interrupt_main(signal.SIGTERM)  # the handler, signalled already, raises KeyboardInterrupt


class _Tally:
    """The run's result, added up from the shards' summaries."""

    def __init__(self) -> None:
        self.result = RunTally(RunStats(), 0.0, 0, None)
        #: the first user-facing error a shard met
        self.error: str | None = None
        self.copied = 0

    def add(self, s: ShardSummary) -> None:
        stats, result = self.result.stats, self.result
        for name in ("labels", "sent", "store_hits", "duplicates", "billed_calls", "tokens", "spent_usd",
                     "internal_errors"):
            setattr(stats, name, getattr(stats, name) + getattr(s, name))
        for status, n in s.statuses.items():
            stats.statuses[Status(status)] += n
        for policy, violation, n in s.violations:
            stats.violations[(policy, violation)] += n
        result.rows_read += s.rows_read
        self.copied += s.copied
        self.error = self.error or s.error
        if s.stop_status is not None and result.stop_status is None:
            result.stop_status = Status(s.stop_status)
        result.fatal_error = result.fatal_error or s.fatal_error
        result.write_error = result.write_error or s.write_error
        if result.internal_error is None and s.internal_error is not None:
            result.internal_error, result.internal_traceback = s.internal_error, s.internal_traceback


def _run_row(run_id: str, out_id: str, started_at: float, outcome: str, tally: _Tally, elapsed: float) -> dict:
    s = tally.result.stats
    return {"run_id": run_id, "out_id": out_id, "started_at": started_at, "ended_at": time.time(),
            "outcome": outcome, "labels": s.labels, "sent": s.sent, "store_hits": s.store_hits,
            "duplicates": s.duplicates, "elapsed_s": round(elapsed, 3)}


