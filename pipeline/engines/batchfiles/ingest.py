"""``moderate batch ingest OUT RESULTS.jsonl [ERRORS.jsonl ...]``: batch answers into store, shards, report.

Each result line is parsed like an online answer (same decoder, same verdict parser) and billed at
the host's batch prices. Answers go to the store; then every input row of the job is labelled and
the same shards as `moderate run` are written. A (row, policy) whose request has no result line
gets ``batch_missing``, one whose line is an error (or an answer that is not a verdict) gets
``batch_failed``: neither is cached as an answer, their shards stay incomplete, and a later
``moderate run`` of the same job sends just those. Ingesting is idempotent: each result line is
committed with its bill in one transaction and never read twice (an ingest killed halfway and run
again bills nothing twice), and ``batch_failed`` outcomes are kept in the store for this folder,
so ingesting the same files again gives the same labels and the same cost report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pipeline.call.answers import read_reply
from pipeline.call.judge import AttemptResult, account
from pipeline.call.parser import InvalidOutput, parse_verdict
from pipeline.call.redact import Redactor
from pipeline.core.cost import Pricing
from pipeline.core.labels import label_row
from pipeline.core.records import FINAL_STATUSES, Outcome, Status, Usage, Verdict
from pipeline.core.tokens import MESSAGE_OVERHEAD, count_tokens
from pipeline.engines.batchfiles.job import Job, Request, row_work
from pipeline.engines.batchfiles.lines import BatchLineError, ResultLine, parse_custom_id, parse_result_line
from pipeline.engines.runstate import new_run_id
from pipeline.output.outdir import Manifest, OutputDir
from pipeline.output.store import ResultStore
from pipeline.ratecontrol import AttemptKind
from pipeline.readers import InputError

BATCH_ROWS = 2048
#: what an answer from a batch file becomes when it is final (the rest is left to the next run).
_FINAL_KINDS = {AttemptKind.ANSWER: Status.OK, AttemptKind.ROW_ERROR: Status.REJECTED,
                AttemptKind.FILTERED: Status.FILTERED}


@dataclass(slots=True)
class Ingested:
    run_id: str
    files: int = 0
    already: int = 0  # files ingested before: skipped
    lines: int = 0
    answered: int = 0
    failed: int = 0
    repeated: int = 0  # lines whose answer was already stored (another file, an earlier ingest)
    unreadable: list[str] = field(default_factory=list)  # "file line N: why", at most a few
    statuses: dict[str, int] = field(default_factory=dict)
    labels: int = 0
    cost_usd: float = 0.0


def ingest(job: Job, manifest: Manifest, *, outdir: OutputDir, store: ResultStore, files: list[Path],
           pricing: Pricing) -> Ingested:
    """Read the files into the store, then write every shard not yet complete. Caller holds the lock."""
    done = Ingested(new_run_id())
    assert manifest.job is not None
    known = set(manifest.job.get("ingested", []))
    fresh: set[bytes] = set()
    store.start()
    redactor = Redactor(os.environ.get(job.config.api_key_env))
    for path in files:
        digest = _sha256(path)
        if digest in known:
            done.already += 1
            continue
        done.files += 1
        ingested = store.batch_lines(manifest.out_id, digest)  # by an ingest that was stopped halfway
        for number, line in _lines(path):
            done.lines += 1
            if number in ingested:
                done.repeated += 1
                continue
            try:
                result = parse_result_line(line)
                fp, index = parse_custom_id(result.custom_id)
                plan = job.plans[index] if index < len(job.plans) else None
                if plan is None:
                    raise BatchLineError(f"custom_id {result.custom_id!r} names policy {index}, the job has "
                                         f"{len(job.plans)}")
            except BatchLineError as exc:
                if len(done.unreadable) < 5:
                    done.unreadable.append(f"{path} line {number}: {exc}")
                continue
            if fp in fresh or store.lookup([fp]):
                done.repeated += 1
                continue
            outcome = read_answer(result, pricing, system_tokens=plan.system_tokens,
                                  keep_reasoning=job.config.keep_reasoning, redactor=redactor,
                                  read_verdict=job.judge.settings.read_verdict,
                                  keep_answer=job.judge.settings.keep_answer)
            store.put(fingerprint=fp, outcome=outcome, policy=plan.policy.name, out_id=manifest.out_id,
                      run_id=done.run_id, batch_line=(digest, number))
            done.cost_usd += outcome.cost_usd
            if outcome.status in FINAL_STATUSES:
                fresh.add(fp)
                done.answered += 1
            else:
                done.failed += 1
        known.add(digest)
    store.record_run({"run_id": done.run_id, "out_id": manifest.out_id, "started_at": time.time(),
                      "ended_at": time.time(), "outcome": "batch", "sent": done.answered + done.failed})
    store.close()  # committed: the answers can be looked up
    _write_shards(job, manifest, outdir=outdir, store=store, fresh=fresh, done=done)
    manifest.job["ingested"] = sorted(known)
    outdir.write_manifest(manifest)
    store.record_run({"run_id": done.run_id, "out_id": manifest.out_id, "labels": done.labels})
    store.close()
    return done


def read_answer(result: ResultLine, pricing: Pricing, *, system_tokens: int, keep_reasoning: bool,
                redactor: Redactor | None = None, read_verdict: Callable[[str], Verdict] | None = None,
                keep_answer: bool = False) -> Outcome:
    """One result line as the outcome an online attempt with this reply would have.

    The reply is read by the same code as online answers (`pipeline.call.answers.read_reply`, the
    verdict parser, `pipeline.call.judge.account`). What online would retry (an error, junk, a cut-off
    answer) is ``batch_failed``: billed if it was, but not cached, so the next run asks again.
    ``redactor`` takes the API key out of every string of the line, as online.
    """
    redactor = redactor or Redactor(None)
    outcome = Outcome(Status.BATCH_FAILED)
    if result.status_code is None or result.body is None:  # no HTTP reply at all
        outcome.attempts, outcome.error = 1, f"batch: {redactor.text(str(result.error))}"
        return outcome
    reading = read_reply(result.status_code, {}, redactor.strings(orjson.dumps(result.body)), now=time.time())
    attempt = AttemptResult(reading.attempt, completion=reading.completion, keep_answer=keep_answer)
    if reading.completion is not None:
        completion = reading.completion
        attempt.usage = completion.usage or Usage(
            prompt_tokens=system_tokens, completion_tokens=count_tokens(completion.content or "") + MESSAGE_OVERHEAD,
            estimated=True)
        if reading.attempt.kind is AttemptKind.ANSWER:
            try:
                attempt.verdict = redactor.verdict((read_verdict or parse_verdict)(completion.content or ""),
                                                   answer=completion.content or "")
            except InvalidOutput as exc:
                attempt.attempt = dataclasses.replace(reading.attempt, kind=AttemptKind.INVALID, error=str(exc))
    account(outcome, attempt, pricing, keep_reasoning=keep_reasoning)
    outcome.status = _FINAL_KINDS.get(attempt.attempt.kind, Status.BATCH_FAILED)
    if outcome.status is not Status.OK:
        error = outcome.error or (redactor.text(str(result.error)) if result.error else attempt.attempt.kind.value)
        outcome.error = f"batch: {error}"
    return outcome


def _write_shards(job: Job, manifest: Manifest, *, outdir: OutputDir, store: ResultStore, fresh: set[bytes],
                  done: Ingested) -> None:
    shard_rows = manifest.shard_rows
    settings = job.config
    rows: list[tuple] = []
    index = unsent = row_count = 0
    row_number = 0

    def flush() -> None:
        nonlocal rows, unsent, row_count
        if row_count:
            manifest.shards[index] = outdir.write_shard(index, rows, input_rows=row_count, unsent=unsent)
            outdir.write_manifest(manifest)
        rows, unsent, row_count = [], 0, 0

    for batch in job.inputs.batches(batch_size=BATCH_ROWS):
        work = [list(row_work(job, text, batch.errors[i] if batch.errors is not None else None))
                for i, text in enumerate(batch.texts)]
        wanted = list({w.fingerprint for items in work for w in items if isinstance(w, Request)})
        stored = store.lookup(wanted)
        failures = store.batch_failures(manifest.out_id, [fp for fp in wanted if fp not in stored])
        for i, items in enumerate(work):
            if row_number // shard_rows != index:
                flush()
                index = row_number // shard_rows
            complete = (info := manifest.shards.get(index)) is not None and info.complete
            if not complete:
                row_count += 1
                for plan, item in zip(job.plans, items, strict=True):
                    fp, source = None, "none"
                    if isinstance(item, Request):
                        fp = item.fingerprint
                        hit = stored.get(fp)
                        if hit is not None:
                            outcome, source = hit.outcome, "batch" if fp in fresh else "store"
                        elif fp in failures:
                            outcome, source = failures[fp], "batch"
                        else:
                            outcome = Outcome(Status.BATCH_MISSING, error="no result line for this request")
                    else:
                        outcome = item
                    if outcome.status in (Status.BATCH_MISSING, Status.BATCH_FAILED):
                        unsent += 1
                    done.statuses[outcome.status.value] = done.statuses.get(outcome.status.value, 0) + 1
                    done.labels += 1
                    rows.append(label_row(
                        id=batch.ids[i], policy=plan.policy.name, outcome=outcome, model=job.model,
                        policy_version=plan.version, reasoning_effort=settings.reasoning_effort,
                        output_format=settings.output_format.value, source=source, fingerprint=fp,
                        row_number=row_number, input_file=batch.source, run_id=done.run_id))
            row_number += 1
    flush()
    if all(s.complete for s in manifest.shards.values()) and len(manifest.shards) * shard_rows >= row_number:
        manifest.finished = True
        manifest.total_rows = row_number


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield number, line
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()
