"""A job's hold on its output folder, from the lock to the exit code: the lifecycle every engine shares.

    lock -> result store -> manifest (resume or start over) -> [the engine labels] ->
    manifest finished? -> reports -> summary line and messages -> `Ending` (outcome, exit code) -> unlock

The local engine (`pipeline.engines.local.app`), the Ray engine (`pipeline.engines.ray.engine`) and
batch-file ingest (`pipeline.engines.batchfiles.ingest`) differ only in how they label; each opens a
`Session` and asks it the same questions.

>>> with open_session(config, job, log=log) as session:  # doctest: +SKIP
...     if session.manifest.finished:
...         return session.nothing_to_do()
...     result = await label(session)  # the engine's own work
...     return session.finish(result, run_id=run_id, policies=len(job.plans))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from pipeline.config.settings import RunConfig
from pipeline.core import exitcodes
from pipeline.engines.ending import Ending, drifted, exit_code, outcome_word, problems, quality_code, summary_line
from pipeline.engines.job import Job, UsageError, job_description, job_identity
from pipeline.engines.runlog import RunLog
from pipeline.engines.runstate import RunTally
from pipeline.output import open_output_dir
from pipeline.output.outdir import Manifest, OutputDir
from pipeline.output.resume import open_manifest
from pipeline.output.store import NullStore, ResultStore
from pipeline.quality.nightly import CANARY_FILE, extend_report, finish_fields, report_rates, summary_notes
from pipeline.report.cost_report import add_earlier_stores, build_report, write_reports

__all__ = ["Ledger", "Session", "open_session", "open_store"]

REPORT_FILE = "report.html"  # pipeline.report.html.REPORT_FILE, named here so polars loads only at the end


class Ledger(Protocol):
    """What a session reads from the store it was given: billing and runs of the folder (and drift rates)."""

    def billing(self, out_id: str) -> list[dict[str, Any]]: ...

    def runs(self, out_id: str) -> list[dict[str, Any]]: ...


def open_store(config: RunConfig, outdir: OutputDir) -> ResultStore:
    """The run's result store: ``--store``, else the folder's own; ``none`` only where the folder kept none."""
    own = Path(outdir.default_store())
    if config.store != "none":
        return ResultStore(config.store or str(own))
    if own.exists():
        raise UsageError(f"{outdir.path} keeps the answers it paid for and what it spent in {own.name}: "
                         "--store none would pay for them again and forget that spend; drop --store none, "
                         "or use a new --out")
    return NullStore()


@contextlib.contextmanager
def open_session(config: RunConfig, job: Job, *, log: RunLog, store: Any = None,
                 identity: dict[str, Any] | None = None) -> Iterator[Session]:
    """Lock the job's output folder, open its store and manifest; unlock on the way out, whatever happens.

    ``store``: a ledger the engine keeps itself (the Ray engine's per-shard stores), else `open_store`.
    ``identity``: the job's identity when the engine adds to it (else `job_identity`).
    """
    outdir = open_output_dir(config.out, kept=job.inputs.kept_fields)
    outdir.lock()
    try:
        ledger = store if store is not None else open_store(config, outdir)
        manifest = open_manifest(outdir, identity or job_identity(config, job.inputs, job.plans, job.model),
                                 shard_rows=config.shard_rows, force=bool(config.force), store=ledger)
        manifest.description = job_description(config, job.inputs, job.plans, job.model)
        yield Session(config, job, outdir, ledger, manifest, log)
    finally:
        outdir.unlock()


class Session:
    """An open output folder of one job: its store, its manifest, and how a run in it ends."""

    def __init__(self, config: RunConfig, job: Job, outdir: OutputDir, store: Any, manifest: Manifest,
                 log: RunLog) -> None:
        self.config, self.job, self.outdir, self.store, self.manifest, self.log = \
            config, job, outdir, store, manifest, log

    # -- the rule for "is the folder complete" ------------------------------------------------
    def mark_finished(self, result: RunTally, *, total_rows: int | None = None) -> None:
        """The folder is finished when the run stopped for nothing and every shard of the input is complete."""
        rows = total_rows if total_rows is not None else result.rows_read
        whole = total_rows is not None or result.input_exhausted
        expected = -(-rows // self.manifest.shard_rows) if whole else -1
        complete = sum(1 for s in self.manifest.shards.values() if s.complete)
        if result.stop_status is None and not (result.write_error or result.fatal_error or result.internal_error) \
                and complete == expected:
            self.manifest.finished = True
            self.manifest.total_rows = rows

    # -- reports ----------------------------------------------------------------------------
    def reports(self, *, drift: bool = True) -> dict[str, Any]:
        """Write cost_report.json/.md and report.html from the store and the shards; returns the report."""
        config, job, manifest, outdir = self.config, self.job, self.manifest, self.outdir
        report = build_report(billing=self.store.billing(manifest.out_id), runs=self.store.runs(manifest.out_id),
                              labels_dir=outdir.labels, pricing=job.pricing, provider=config.provider,
                              model=job.model)
        add_earlier_stores(report, manifest.earlier_stores_usd)
        rates = None
        if drift and hasattr(self.store, "rates"):
            self.store.settle_rates(manifest.out_id, report_rates(report))
            rates = self.store.rates(manifest.out_id, history=config.drift_runs)
        extend_report(report, out=outdir.path, manifest=manifest, config=config, rates=rates)
        write_reports(report, outdir.path)
        if manifest.store is not None:  # the folder keeps its own total, whatever store the next run uses
            manifest.spent_usd = report["cost_usd"]
            outdir.write_manifest(manifest)
        from pipeline.report.html import write_html_report  # polars and numpy only at the end of a run

        # an object-store folder gets it too: the shards are read back once (pipeline.output.reader)
        write_html_report(str(outdir.path) if not outdir.local else outdir.path, text_column=config.text_column,
                          id_column=config.id_column)
        return report

    # -- endings ----------------------------------------------------------------------------
    def nothing_to_do(self) -> Ending:
        """The folder was complete already: refresh its reports and say so."""
        outdir, manifest = self.outdir, self.manifest
        try:
            report = self.reports()
        except OSError as exc:
            return self.cannot_write(exc)
        finally:
            with contextlib.suppress(Exception):
                self.store.close()
        bad = problems(report)
        code = quality_code(report)
        notes = summary_notes(report) if drifted(report) else ""
        self.log.say("finish", f"moderate: nothing to do: {outdir.path} is complete ({manifest.total_rows} rows"
                     + (f", {bad} labels not ok: --force retries them, cached answers are reused" if bad else "")
                     + f"); report in {outdir.path / 'cost_report.md'}" + (f"; {notes}" if notes else ""),
                     outcome="nothing_to_do", exit_code=code,
                     out=str(outdir.path), **finish_fields(report))
        return Ending("nothing_to_do", code, str(outdir.path), 0.0, report, None)

    def finish(self, result: RunTally, *, run_id: str, notes: list[str] | None = None,
               drift: bool = True) -> Ending:
        """Write the manifest and reports, say how the run ended (problems, then the summary), return the ending.

        Call `mark_finished` first. ``notes``: the engine's own lines, said before the rest.
        """
        log, outdir = self.log, self.outdir
        try:
            if self.manifest.finished:
                outdir.write_manifest(self.manifest)
            report = self.reports(drift=drift)
        except OSError as exc:  # the disk filled up (the store's journal may have taken the last bytes)
            if result.write_error:
                log.say("error", f"moderate: error: {result.write_error}; {self.what_was_kept()}")
            return self.cannot_write(exc)
        code = exit_code(result, report)
        line = summary_line(result, report, policies=len(self.job.plans), labels_dir=outdir.labels,
                            report_path=outdir.path / "cost_report.md",
                            simulated=self.config.provider == "simulator",
                            html_path=outdir.path / REPORT_FILE)
        if extra := summary_notes(report):
            line += f"; {extra}"
        for note in notes or []:
            log.say("notice", note)
        self._problems(result, report)
        s = result.stats
        log.say("finish", line, outcome=outcome_word(result), exit_code=code, run_id=run_id, out=str(outdir.path),
                elapsed_s=round(result.elapsed, 3), sent=s.sent, store_hits=s.store_hits, duplicates=s.duplicates,
                run_cost_usd=round(s.spent_usd, 8), **finish_fields(report))
        return Ending(outcome_word(result), code, str(outdir.path), s.spent_usd, report, s)

    def _problems(self, result: RunTally, report: dict[str, Any]) -> None:
        log = self.log
        if report["duplicate_ids"]:
            log.say("warning", f"moderate: warning: {report['duplicate_ids']:,} rows share an id with another row "
                    "(each is labelled on its own; join on row_number)", duplicate_ids=report["duplicate_ids"])
        if result.write_error:
            log.say("error", f"moderate: error: {result.write_error}; {self.what_was_kept()}")
        elif result.fatal_error:
            log.say("error", f"moderate: error: the endpoint refused the run: {result.fatal_error}")
        if result.internal_error:
            if not log.json and result.internal_traceback:
                log.stream.write(result.internal_traceback)
            log.say("error", f"moderate: internal error (a bug) on {result.stats.internal_errors:,} rows, which "
                    f"are marked failed: {result.internal_error}; please report it with the traceback above",
                    traceback=result.internal_traceback)
        if result.canaries_wrong:
            log.say("error", f"moderate: error: {result.canaries_wrong} canaries got a wrong verdict (a model, host "
                    f"or policy change?): see {self.outdir.path / CANARY_FILE}")

    def cannot_write(self, exc: OSError) -> Ending:
        """The reports could not be written (a full disk): one line, exit 2, the folder resumable."""
        where = exc.filename or self.outdir.path
        self.log.say("error", f"moderate: error: cannot write the report in {self.outdir.path} ({where}: "
                     f"{exc.strerror or exc}); {self.what_was_kept()}", exit_code=exitcodes.EXIT_USAGE)
        return Ending("write_failed", exitcodes.EXIT_USAGE, str(self.outdir.path), 0.0, None, None)

    def what_was_kept(self) -> str:
        """What a failed write left, as it is: never a claim that answers were saved when they were not."""
        if not getattr(self.store, "failed", False):
            return "the answers paid for are in the store: free some space and run the same command to resume"
        unsaved = getattr(self.store, "unsaved", 0)
        lost = f"{unsaved:,} answers paid for could not be saved in it and will be asked again; " if unsaved else ""
        return f"{lost}answers committed before the failure are kept: free some space and run the same command " \
            "to resume"
