"""``moderate batch prepare``: the job's requests as OpenAI batch input files.

One line per (unique text, policy) that neither the store nor a complete shard already answers,
split into files under a line and byte limit. The output folder is set up (manifest with the job's
settings) so that ``moderate batch ingest OUT RESULTS.jsonl`` and ``moderate run`` continue it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from pipeline.engines.batchfiles.job import Job, Request, body, record, row_work
from pipeline.engines.batchfiles.lines import custom_id, request_line
from pipeline.output.outdir import Manifest, OutputDir
from pipeline.output.outfiles import writing
from pipeline.output.resume import open_manifest
from pipeline.output.store import ResultStore

BATCH_ROWS = 2048
DEFAULT_MAX_LINES = 50_000
DEFAULT_MAX_BYTES = 100_000_000


@dataclass(slots=True)
class Prepared:
    files: list[Path] = field(default_factory=list)
    requests: int = 0
    from_store: int = 0
    duplicates: int = 0
    without_request: int = 0  # empty, too long or unreadable rows: labelled at ingest, nothing to send


class SplitWriter:
    """Writes lines to ``stem-00001.jsonl``, ``stem-00002.jsonl`` ... each under both limits.

    When everything fits in one file it is renamed to the path asked for, which `output_target`
    checked (a regular file or a new name in an existing folder, links followed).
    """

    def __init__(self, path: Path, *, max_lines: int, max_bytes: int) -> None:
        self.path = path
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.files: list[Path] = []
        self._handle: BinaryIO | None = None
        self._lines = self._bytes = 0

    def write(self, line: bytes) -> None:
        if len(line) > self.max_bytes:
            raise ValueError(f"one request is {len(line):,} bytes, over --max-bytes {self.max_bytes:,}")
        if self._handle is None or self._lines >= self.max_lines or self._bytes + len(line) > self.max_bytes:
            self._next()
        assert self._handle is not None
        with writing(f"--output {self.path}"):
            self._handle.write(line)
        self._lines += 1
        self._bytes += len(line)

    def close(self) -> list[Path]:
        with writing(f"--output {self.path}"):
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            if len(self.files) == 1:
                os.replace(self.files[0], self.path)
                self.files = [self.path]
        return self.files

    def _next(self) -> None:
        if self._handle is not None:
            self._handle.close()
        part = self.path.with_name(f"{self.path.stem}-{len(self.files) + 1:05d}{self.path.suffix or '.jsonl'}")
        with writing(f"--output {self.path}"):
            self._handle = open(part, "wb")  # noqa: SIM115 - closed by _next or close
        self.files.append(part)
        self._lines = self._bytes = 0


def prepare(job: Job, *, outdir: OutputDir, store: ResultStore, output: Path, max_lines: int,
            max_bytes: int) -> Prepared:
    """Write the request files; the caller holds the output folder's lock."""
    manifest = _manifest(job, outdir, store)
    skip = _complete_prefix(manifest) * manifest.shard_rows
    writer = SplitWriter(output, max_lines=max_lines, max_bytes=max_bytes)
    done = Prepared()
    # requests already written, by the first 8 bytes of their fingerprint (a third of the memory of
    # whole fingerprints); a collision only drops a request, which ingest marks batch_missing
    seen: set[int] = set()
    try:
        for batch in job.inputs.batches(batch_size=BATCH_ROWS, skip_rows=skip):
            requests: list[Request] = []
            errors = batch.errors
            for i, text in enumerate(batch.texts):
                for item in row_work(job, text, errors[i] if errors is not None else None):
                    if isinstance(item, Request):
                        requests.append(item)
                    else:
                        done.without_request += 1
            fresh = [r for r in requests if _short(r.fingerprint) not in seen]
            done.duplicates += len(requests) - len(fresh)
            stored = store.lookup(list({r.fingerprint for r in fresh}))
            for request in fresh:
                if _short(request.fingerprint) in seen:
                    done.duplicates += 1
                    continue
                seen.add(_short(request.fingerprint))
                if request.fingerprint in stored:
                    done.from_store += 1
                    continue
                line = request_line(custom_id(request.fingerprint, request.plan.index),
                                    body(job, request.plan, request.user))
                writer.write(line)
                done.requests += 1
    finally:
        done.files = writer.close()
    return done


def _short(fingerprint: bytes) -> int:
    return int.from_bytes(fingerprint[:8], "little")


def _manifest(job: Job, outdir: OutputDir, store: ResultStore) -> Manifest:
    """The folder's manifest for this job (as `run` opens it), with the job's settings recorded."""
    manifest = open_manifest(outdir, job.identity, shard_rows=job.config.shard_rows, force=bool(job.config.force),
                             store=store)
    manifest.job = record(job.config) | {"ingested": (manifest.job or {}).get("ingested", [])}
    outdir.write_manifest(manifest)
    return manifest


def _complete_prefix(manifest: Manifest) -> int:
    count = 0
    while (info := manifest.shards.get(count)) is not None and info.complete:
        count += 1
    return count


def summary(done: Prepared, outdir: OutputDir, stream: TextIO) -> None:
    names = ", ".join(str(f) for f in done.files[:3]) + (" ..." if len(done.files) > 3 else "")
    print(f"moderate: batch prepared: {done.requests:,} requests in {len(done.files)} file(s) "
          f"({names or 'none: nothing to send'}); {done.from_store:,} answered by the store, "
          f"{done.duplicates:,} duplicates, {done.without_request:,} labels need no request. "
          f"Then: moderate batch ingest {outdir.path} RESULTS.jsonl [ERRORS.jsonl ...]", file=stream)
