"""The result store: SQLite, keyed by request fingerprint, plus the billing ledger.

One table is at once the dedup cache, the resume log and the nightly "already labelled" index.
Writes go through one background thread that commits whatever has queued up in a single
transaction (group commit): under light load every answer is durable within a millisecond, under
heavy load commits batch themselves. Billing counters are updated in the same transaction as the
results they paid for, so a crash can never record one without the other.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.labels import STORED, outcome_from_values, store_values
from pipeline.core.records import FINAL_STATUSES, Outcome, Usage

_RESULTS = (
    "CREATE TABLE IF NOT EXISTS results (fingerprint BLOB PRIMARY KEY, "
    + ", ".join(f"{c.name} {c.sql}" for c in STORED)
    + ", run_id TEXT, created_at REAL) WITHOUT ROWID"
)
#: batch answers that are not final (``batch_failed``): kept per output directory so that a later
#: ingest labels them again with their error, never cached as answers.
_BATCH_FAILURES = (
    "CREATE TABLE IF NOT EXISTS batch_failures (out_id TEXT NOT NULL, fingerprint BLOB NOT NULL, "
    + ", ".join(f"{c.name} {c.sql}" for c in STORED)
    + ", run_id TEXT, created_at REAL, PRIMARY KEY (out_id, fingerprint)) WITHOUT ROWID"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS billing (
    out_id TEXT NOT NULL, run_id TEXT NOT NULL, policy TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0, estimated_requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, cached_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0, reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0, server_cost_usd REAL,
    charged_usd REAL, server_cost_requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (out_id, run_id, policy)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, out_id TEXT NOT NULL, started_at REAL, ended_at REAL,
    outcome TEXT, labels INTEGER DEFAULT 0, sent INTEGER DEFAULT 0,
    store_hits INTEGER DEFAULT 0, duplicates INTEGER DEFAULT 0, elapsed_s REAL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batch_lines (
    out_id TEXT NOT NULL, file TEXT NOT NULL, line INTEGER NOT NULL, PRIMARY KEY (out_id, file, line)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rates (
    run_id TEXT NOT NULL, out_id TEXT NOT NULL, ended_at REAL NOT NULL, policy TEXT NOT NULL,
    ok INTEGER NOT NULL, violations INTEGER NOT NULL, PRIMARY KEY (run_id, policy)
);
"""

_COLUMNS = ", ".join(["fingerprint", *(c.name for c in STORED), "run_id", "created_at"])
_INSERT = f"INSERT OR REPLACE INTO results ({_COLUMNS}) VALUES ({', '.join('?' * (len(STORED) + 3))})"
_INSERT_FAILURE = (f"INSERT OR REPLACE INTO batch_failures (out_id, {_COLUMNS}) "
                   f"VALUES ({', '.join('?' * (len(STORED) + 4))})")
_BILL = """
INSERT INTO billing (out_id, run_id, policy, requests, estimated_requests, prompt_tokens,
    cached_prompt_tokens, completion_tokens, reasoning_tokens, cost_usd, server_cost_usd, charged_usd,
    server_cost_requests)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (out_id, run_id, policy) DO UPDATE SET
    requests = requests + excluded.requests,
    estimated_requests = estimated_requests + excluded.estimated_requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    cached_prompt_tokens = cached_prompt_tokens + excluded.cached_prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
    cost_usd = cost_usd + excluded.cost_usd,
    server_cost_usd = CASE WHEN excluded.server_cost_usd IS NULL THEN server_cost_usd
                      ELSE COALESCE(server_cost_usd, 0) + excluded.server_cost_usd END,
    charged_usd = COALESCE(charged_usd, cost_usd) + excluded.charged_usd,
    server_cost_requests = server_cost_requests + excluded.server_cost_requests
"""


#: (ok labels, violations) per policy of one run
RunRates = dict[str, tuple[int, int]]


class StoreError(UserError):
    """The store file cannot be opened or written (one line, names the path)."""


@dataclass(slots=True)
class StoredResult:
    outcome: Outcome
    run_id: str


def _connect(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_RESULTS)
        conn.execute(_BATCH_FAILURES)
        conn.executescript(_SCHEMA)
        _add_missing_columns(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open result store ({exc})") from None
    return conn


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """A store written by an older version lacks newer answer columns: add them (NULL for old rows)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    for column in STORED:
        if column.name not in present:
            conn.execute(f"ALTER TABLE results ADD COLUMN {column.name} {column.sql.replace(' NOT NULL', '')}")
    present = {row[1] for row in conn.execute("PRAGMA table_info(billing)")}
    if "charged_usd" not in present:  # older ledgers: what was charged is the list price (NULL here)
        conn.execute("ALTER TABLE billing ADD COLUMN charged_usd REAL")
        conn.execute("ALTER TABLE billing ADD COLUMN server_cost_requests INTEGER NOT NULL DEFAULT 0")


class ResultStore:
    """Results by fingerprint and billing by (output directory, run, policy)."""

    #: whether results are kept (False for NullStore: only billing is recorded).
    keeps_results = True
    #: how long the writer waits after the first queued answer before committing: it bounds
    #: what a crash can lose to 2 ms of answers while cutting commits to at most ~500/s.
    LINGER_S = 0.002

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create the store's folder ({exc.strerror})") from None
        self._read = _connect(self.path)
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._on_commit: Callable[[list[bytes]], None] | None = None
        self._error: BaseException | None = None
        self._on_error: Callable[[str], None] | None = None
        #: paid answers queued but never committed because a commit failed (disk full, file too large)
        self.unsaved = 0
        self._write = self._read if self.path == ":memory:" else _connect(self.path)

    # -- reads (caller's thread) -------------------------------------------------------------
    def lookup(self, fingerprints: Sequence[bytes]) -> dict[bytes, StoredResult]:
        """Stored final results for any of these fingerprints."""
        found: dict[bytes, StoredResult] = {}
        for start in range(0, len(fingerprints), 500):
            chunk = fingerprints[start : start + 500]
            sql = f"SELECT {_COLUMNS} FROM results WHERE fingerprint IN ({','.join('?' * len(chunk))})"
            for row in self._read.execute(sql, chunk):
                found[row[0]] = StoredResult(outcome_from_values(row[1:-2]), row[-2])
        return found

    def batch_failures(self, out_id: str, fingerprints: Sequence[bytes]) -> dict[bytes, Outcome]:
        """The ``batch_failed`` outcomes ingested into ``out_id`` for any of these fingerprints."""
        found: dict[bytes, Outcome] = {}
        for start in range(0, len(fingerprints), 500):
            chunk = fingerprints[start : start + 500]
            sql = (f"SELECT {_COLUMNS} FROM batch_failures WHERE out_id = ? "
                   f"AND fingerprint IN ({','.join('?' * len(chunk))})")
            for row in self._read.execute(sql, (out_id, *chunk)):
                found[row[0]] = outcome_from_values(row[1:-2])
        return found

    def batch_lines(self, out_id: str, file: str) -> set[int]:
        """Line numbers of the results file ``file`` (its SHA-256) already ingested into ``out_id``."""
        rows = self._read.execute("SELECT line FROM batch_lines WHERE out_id = ? AND file = ?", (out_id, file))
        return {line for (line,) in rows}

    def billing(self, out_id: str) -> list[dict]:
        cursor = self._read.execute("SELECT * FROM billing WHERE out_id = ? ORDER BY rowid", (out_id,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def runs(self, out_id: str) -> list[dict]:
        cursor = self._read.execute("SELECT * FROM runs WHERE out_id = ? ORDER BY started_at", (out_id,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def rates(self, out_id: str, *, history: int) -> tuple[RunRates, list[RunRates]]:
        """Drift's inputs: the labels of ``out_id`` (every run of it together) and of up to ``history``
        other output directories sharing this store whose last run ended before this one's, newest first,
        as (ok, violations) per policy. Each directory counts once: a rerun, a resumed run or a run stopped
        by the budget adds to its own night, not to the nights it is compared with. ``({}, [])`` when the
        directory has no run that labelled anything.
        """
        row = self._read.execute("SELECT MAX(ended_at) FROM rates WHERE out_id = ?", (out_id,)).fetchone()
        if row is None or row[0] is None:
            return {}, []
        earlier = [r[0] for r in self._read.execute(
            "SELECT out_id FROM rates WHERE out_id != ? GROUP BY out_id HAVING MAX(ended_at) < ? "
            "ORDER BY MAX(ended_at) DESC LIMIT ?", (out_id, row[0], history))]
        return self._output_rates(out_id), [self._output_rates(r) for r in earlier]

    def _output_rates(self, out_id: str) -> dict[str, tuple[int, int]]:
        return {policy: (ok, v) for policy, ok, v in self._read.execute(
            "SELECT policy, SUM(ok), SUM(violations) FROM rates WHERE out_id = ? GROUP BY policy", (out_id,))}

    def settle_rates(self, out_id: str, counts: RunRates) -> None:
        """Replace what the runs of ``out_id`` recorded with the directory's own counts (from its shards), so a
        rerun or resume neither counts a row twice nor leaves out rows an earlier run of it labelled.
        Kept at the time of the directory's last run; nothing when no run of it recorded rates."""
        conn = self._read
        conn.execute("BEGIN IMMEDIATE")  # another night's report reading the table sees before or after, never between
        try:
            row = conn.execute("SELECT run_id, ended_at FROM rates WHERE out_id = ? ORDER BY ended_at DESC LIMIT 1",
                               (out_id,)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM rates WHERE out_id = ?", (out_id,))
                conn.executemany("INSERT OR REPLACE INTO rates VALUES (?, ?, ?, ?, ?, ?)",
                                 [(row[0], out_id, row[1], p, ok, v) for p, (ok, v) in counts.items() if ok])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def mark_killed(self, out_id: str) -> None:
        """Runs of this directory still marked running were killed (the caller holds its lock)."""
        with self._read:
            self._read.execute("UPDATE runs SET outcome = 'killed' WHERE out_id = ? AND outcome = 'running'",
                               (out_id,))

    def forget_output(self, out_id: str) -> None:
        """Drop the ledger of an output directory that is started over (results stay cached)."""
        with self._read:
            self._read.execute("DELETE FROM billing WHERE out_id = ?", (out_id,))
            self._read.execute("DELETE FROM runs WHERE out_id = ?", (out_id,))
            self._read.execute("DELETE FROM rates WHERE out_id = ?", (out_id,))
            self._read.execute("DELETE FROM batch_lines WHERE out_id = ?", (out_id,))
            self._read.execute("DELETE FROM batch_failures WHERE out_id = ?", (out_id,))

    # -- writes (background thread) ----------------------------------------------------------
    def start(self, *, on_commit: Callable[[list[bytes]], None] | None = None,
              on_error: Callable[[str], None] | None = None) -> None:
        """Start the writer thread. ``on_error`` hears (from that thread) the first commit that fails."""
        self._on_commit = on_commit
        self._on_error = on_error
        self._thread = threading.Thread(target=self._writer, name="result-store", daemon=True)
        self._thread.start()

    def put(self, *, fingerprint: bytes | None, outcome: Outcome, policy: str, out_id: str,
            run_id: str, batch_line: tuple[str, int] | None = None) -> None:
        """Queue one finished call: its result (when final) and what it was billed.

        ``batch_line``: the (results file's SHA-256, line number) the answer was read from; a line
        already committed is skipped whole, so a file ingested again is never billed twice.
        """
        self._queue.put(("result", fingerprint, outcome, policy, out_id, run_id, batch_line))

    def backlog(self) -> int:
        """Answers queued but not yet committed (the runner slows down when this grows).

        Raises StoreError once the writer thread has failed, so nobody waits for it forever.
        """
        if self._error is not None:
            raise StoreError(self.failure())
        return self._queue.qsize()

    def record_run(self, run: dict) -> None:
        """Queue an upsert of this run's row in `runs`."""
        self._queue.put(("run", run))

    def record_rates(self, *, run_id: str, out_id: str, ended_at: float,
                     counts: dict[str, tuple[int, int]]) -> None:
        """Queue this run's (ok labels, violations) per policy, for drift checks of later runs."""
        self._queue.put(("rates", [(run_id, out_id, ended_at, p, ok, v) for p, (ok, v) in counts.items() if ok]))

    def close(self) -> None:
        """Commit everything queued, then stop the writer thread."""
        if self._thread is None and not self._queue.empty():
            self.start(on_commit=self._on_commit, on_error=self._on_error)  # queued before start(): commit it
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            self._count_unsaved()
            raise StoreError(self.failure())

    @property
    def failed(self) -> bool:
        """A commit failed: answers queued since were not saved."""
        return self._error is not None

    def failure(self) -> str:
        """One line naming the store file and why it could not be written."""
        return f"{self.path}: cannot write result store ({self._error})"

    def _count_unsaved(self, batch: Iterable[tuple | None] = ()) -> None:
        """Count the paid answers in ``batch`` and still queued: the store will never hold them."""
        def answers(items: Iterable[tuple | None]) -> int:
            return sum(1 for item in items if item is not None and item[0] == "result" and item[2].billed_calls)

        self.unsaved += answers(batch)
        drained = []
        while True:
            try:
                drained.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self.unsaved += answers(drained)

    def _writer(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            if self.LINGER_S:  # let a few more answers arrive: one commit (and one wake-up) for all
                time.sleep(self.LINGER_S)
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is None or None in batch:
                stop = True
                batch = [item for item in batch if item is not None]
            try:
                committed = self._commit(batch)
            except Exception as exc:  # disk full, locked for too long, a value it cannot take: surface
                self._error = exc     # at once and at the next backlog() or close(), never a silently dead thread
                self._count_unsaved(batch)
                if self._on_error is not None:
                    self._on_error(self.failure())
                return
            if committed and self._on_commit is not None:
                self._on_commit(committed)

    def _commit(self, batch: Iterable[tuple]) -> list[bytes]:
        conn = self._write
        conn.execute("BEGIN")
        try:
            settled = self._commit_items(conn, batch)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT (SQLITE_FULL) has rolled back already
                conn.execute("ROLLBACK")
            raise
        return settled

    def _commit_items(self, conn: sqlite3.Connection, batch: Iterable[tuple]) -> list[bytes]:
        rows, failures, bills, runs, settled, rates = [], [], {}, [], [], []
        now = time.time()
        for item in batch:
            if item[0] == "run":
                runs.append(item[1])
                continue
            if item[0] == "rates":
                rates.extend(item[1])
                continue
            _, fingerprint, outcome, policy, out_id, run_id, batch_line = item
            if batch_line is not None and not conn.execute(
                    "INSERT OR IGNORE INTO batch_lines VALUES (?, ?, ?)", (out_id, *batch_line)).rowcount:
                continue  # this line was ingested (and billed) before
            if fingerprint is not None and outcome.status in FINAL_STATUSES:
                settled.append(fingerprint)
                if self.keeps_results:
                    rows.append((fingerprint, *store_values(outcome), run_id, now))
            elif fingerprint is not None and batch_line is not None:
                failures.append((out_id, fingerprint, *store_values(outcome), run_id, now))
            if outcome.billed_calls:
                key = (out_id, run_id, policy)
                bill = bills.get(key)
                if bill is None:  # not setdefault: its default would be built for every answer
                    bill = bills[key] = [0, 0, Usage(), 0.0, 0.0, 0]
                bill[0] += outcome.billed_calls
                bill[1] += outcome.billed_calls if outcome.usage.estimated else 0
                bill[2].add(outcome.usage)
                bill[3] += outcome.cost_usd
                reported = outcome.usage.server_cost_usd
                bill[4] += outcome.cost_usd if reported is None else reported
                bill[5] += outcome.billed_calls if reported is not None else 0
        if rows:
            conn.executemany(_INSERT, rows)
        if failures:
            conn.executemany(_INSERT_FAILURE, failures)
        if rates:
            conn.executemany("INSERT OR REPLACE INTO rates VALUES (?, ?, ?, ?, ?, ?)", rates)
        for (out_id, run_id, policy), (calls, estimated, usage, cost, charged, reported) in bills.items():
            conn.execute(_BILL, (out_id, run_id, policy, calls, estimated, usage.prompt_tokens,
                                 usage.cached_prompt_tokens, usage.completion_tokens,
                                 usage.reasoning_tokens, cost, usage.server_cost_usd, charged, reported))
        for run in runs:
            columns = ", ".join(run)
            updates = ", ".join(f"{k} = excluded.{k}" for k in run if k != "run_id")
            conn.execute(
                f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' * len(run))}) "
                f"ON CONFLICT (run_id) DO UPDATE SET {updates}",
                tuple(run.values()),
            )
        return settled


class NullStore(ResultStore):
    """No persistence (``--store none``): no resume, no cache across runs; billing kept in memory."""

    keeps_results = False

    def __init__(self) -> None:
        super().__init__(":memory:")

    def lookup(self, fingerprints: Sequence[bytes]) -> dict[bytes, StoredResult]:
        return {}
