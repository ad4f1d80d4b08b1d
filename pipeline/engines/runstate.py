"""What one run is set to do and what it has done: settings, counters, result."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from pipeline.core.records import Status

__all__ = ["RunSettings", "RunStats", "RunTally", "new_run_id"]


@dataclass(slots=True)
class RunSettings:
    out_id: str
    run_id: str
    model: str
    reasoning_effort: str
    output_format: str
    concurrency: int
    too_long: str
    max_tokens: int
    keep_reasoning: bool
    grace_seconds: float
    shard_rows: int
    #: the first input row this run reads (a cluster worker runs one shard: its first row)
    first_row: int = 0


@dataclass(slots=True)
class RunStats:
    labels: int = 0
    sent: int = 0
    store_hits: int = 0
    duplicates: int = 0
    billed_calls: int = 0
    tokens: int = 0
    #: dollars charged this run (the host's own figure where it reports one)
    spent_usd: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    violations: Counter = field(default_factory=Counter)
    #: rows that met a bug in the pipeline (each ends ``failed``; the run exits 70)
    internal_errors: int = 0


@dataclass(slots=True)
class RunTally:
    """What one run did and why it stopped (counters, rows read, the first error); `engines.session` turns it into
    an `Ending` (outcome word, exit code) and the library into `pipeline.RunResult`."""

    stats: RunStats
    elapsed: float
    rows_read: int
    #: None when the run went to the end; else why it stopped sending
    stop_status: Status | None
    #: the endpoint refused the run (bad key, no credit, unreachable): the host's words
    fatal_error: str | None = None
    #: the store or a shard could not be written (disk full): one line
    write_error: str | None = None
    #: the input ended before every shard was closed (a stop or an unreadable input)
    input_exhausted: bool = False
    #: the first internal error's description, and its traceback
    internal_error: str | None = None
    internal_traceback: str | None = None
    #: canaries answered with the wrong verdict (the run exits `exitcodes.EXIT_CANARY`)
    canaries_wrong: int = 0


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
