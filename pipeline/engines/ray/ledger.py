"""The ledger of a cluster run, kept in the output directory so any machine can resume it.

Each shard has its own result store, written by whichever process labels that shard::

    OUT/results/part-00007.sqlite   answers and billing of shard 7 (the local engine's store format)
    OUT/runs.json                   one row per run of this directory (the driver writes it)

``OUT`` is a folder every node sees, or an object store (`pipeline.engines.ray.shardstores`).

A process killed in the middle of shard 7 leaves its answers in ``part-00007.sqlite``; the next run
of shard 7, on any machine, takes them from there instead of paying again. The cost report adds up
the billing of every shard's store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import orjson

from pipeline.engines.ray.shardstores import RESULTS_DIR, ShardStores

__all__ = ["ClusterLedger", "merge_answers", "merge_billing", "shard_store_path"]

RUNS_FILE = "runs.json"
_SUMMED = ("requests", "estimated_requests", "prompt_tokens", "cached_prompt_tokens", "completion_tokens",
           "reasoning_tokens", "cost_usd", "server_cost_requests")
_OPTIONAL = ("server_cost_usd", "charged_usd")  # NULL means "none reported"


def shard_store_path(out: str | Path, index: int) -> Path:
    """Shard ``index``'s store in an output folder on a file system."""
    return Path(out) / RESULTS_DIR / f"part-{index:05d}.sqlite"


def merge_billing(rows: list[dict]) -> list[dict]:
    """Billing rows of several stores summed per (out_id, run_id, policy), in order of first appearance."""
    merged: dict[tuple[str, str, str], dict] = {}
    for row in rows:
        key = (row["out_id"], row["run_id"], row["policy"])
        into = merged.get(key)
        if into is None:
            merged[key] = dict(row)
            continue
        for name in _SUMMED:
            into[name] = (into.get(name) or 0) + (row.get(name) or 0)
        for name in _OPTIONAL:
            if row.get(name) is not None:
                into[name] = (into.get(name) or 0.0) + row[name]
    return list(merged.values())


class ClusterLedger:
    """Billing and runs of one output directory, over its per-shard stores (see the module docstring).

    It answers what `pipeline.output.resume.open_manifest` asks of a store (`forget_output`, `mark_killed`)
    and what the cost report needs (`billing`, `runs`).
    """

    def __init__(self, out: str | Path) -> None:
        self.shard_stores = ShardStores(out)

    def stores(self) -> list[Path]:
        return self.shard_stores.every()

    def close(self) -> None:
        self.shard_stores.close()

    def billing(self, out_id: str) -> list[dict]:
        rows: list[dict] = []
        for path in self.stores():
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)) as db:
                try:
                    cursor = db.execute("SELECT * FROM billing WHERE out_id = ? ORDER BY rowid", (out_id,))
                except sqlite3.OperationalError:  # created but never written
                    continue
                names = [d[0] for d in cursor.description]
                rows += [dict(zip(names, row, strict=True)) for row in cursor]
        return merge_billing(rows)

    def runs(self, out_id: str) -> list[dict]:
        return [r for r in self._read_runs() if r.get("out_id") == out_id]

    def record_run(self, run: dict) -> None:
        """Insert or replace this run's row."""
        runs = [r for r in self._read_runs() if r.get("run_id") != run["run_id"]]
        self._write_runs([*runs, run])

    def mark_killed(self, out_id: str) -> None:
        """Runs of this directory still marked running were killed (the caller holds its lock)."""
        runs = self._read_runs()
        for run in runs:
            if run.get("out_id") == out_id and run.get("outcome") == "running":
                run["outcome"] = "killed"
        self._write_runs(runs)

    def forget_output(self, out_id: str) -> None:
        """Drop the billing and runs of a directory started over (the answers stay, for reuse)."""
        for path in self.stores():
            with contextlib.closing(sqlite3.connect(path, timeout=30.0)) as db, db, \
                    contextlib.suppress(sqlite3.OperationalError):
                db.execute("DELETE FROM billing WHERE out_id = ?", (out_id,))
            self.shard_stores.put_back(path)
        self._write_runs([r for r in self._read_runs() if r.get("out_id") != out_id])

    def _read_runs(self) -> list[dict]:
        raw = self.shard_stores.read_file(RUNS_FILE)
        return [] if raw is None else orjson.loads(raw)

    def _write_runs(self, runs: list[dict]) -> None:
        self.shard_stores.write_file(RUNS_FILE, orjson.dumps(runs, option=orjson.OPT_INDENT_2))


def merge_answers(stores: list[Path], target: str | Path) -> int:
    """Add the answers of the per-shard ``stores`` to the store at ``target`` (``--store``); how many were new.

    Answers only: what the output folder spent stays in its own stores.
    """
    from pipeline.output.store import ResultStore

    ResultStore(target).close()  # created with its tables when new
    added = 0
    with contextlib.closing(sqlite3.connect(target, timeout=30.0)) as db:
        for path in stores:
            db.execute("ATTACH DATABASE ? AS shard", (str(path),))
            try:
                with db:
                    columns = ", ".join(row[1] for row in db.execute("PRAGMA shard.table_info(results)"))
                    if columns:
                        added += db.execute(f"INSERT OR IGNORE INTO main.results ({columns}) "
                                            f"SELECT {columns} FROM shard.results").rowcount
            finally:
                db.execute("DETACH DATABASE shard")
    return added
