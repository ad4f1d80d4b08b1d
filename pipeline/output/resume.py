"""Resume rules: what an output directory holds, whether this job may continue it, what is left.

- A directory is one job: its identity (input, limit, policies and their versions, model, effort,
  output format, prompt version) must match, else the run refuses unless ``--force``.
- A directory keeps its answers and ledger in one result store, recorded in the manifest: a rerun
  with another store (a forgotten ``--store``) would pay again under a cap that forgot the spend,
  so it is refused unless ``--force``.
- ``--force`` starts it over (the store's answers are reused, so nothing is paid twice). The
  ledger of the store in use starts over; what was spent through another store (or with
  ``--store none``) cannot be reused, so it stays counted against ``--max-cost`` and in the report.
- A shard counts as done only while its file is on disk with the hash the manifest recorded: a
  missing or altered shard is dropped from the manifest and rebuilt from the store.
- Runs of the directory left ``running`` by a process that is gone are marked ``killed``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from pathlib import Path

from pipeline.core.storage import Location
from pipeline.output.outdir import Manifest, OutputDir, OutputDirError
from pipeline.output.store import NullStore, ResultStore

__all__ = ["identity_changes", "open_manifest", "store_location", "verify_shards"]


def identity_changes(old: dict, new: dict) -> list[str]:
    """The identity keys whose values differ (a key only one side has counts)."""
    return [k for k in {**old, **new} if old.get(k) != new.get(k)]


def open_manifest(outdir: OutputDir, identity: dict, *, shard_rows: int, force: bool,
                  store: ResultStore) -> Manifest:
    """The manifest to continue, or a new one; raises OutputDirError for a different job or store."""
    try:
        existing = outdir.read_manifest()
    except OutputDirError:
        if not force:
            raise
        outdir.clear()  # --force starts over even from an unreadable manifest
        existing = None
    location = store_location(store)
    earlier = 0.0 if existing is None else _earlier_spend(existing, location)
    if existing is not None and not force:
        _refuse_other_store(outdir, existing, location)
    if existing is not None and (force or existing.identity != identity):
        if not force:
            changed = ", ".join(identity_changes(existing.identity, identity))
            raise OutputDirError(f"{outdir.path} holds a run with other settings ({changed} changed); "
                                 "use a new --out, or --force to start it over (cached answers are reused)")
        store.forget_output(existing.out_id)
        outdir.clear()
        existing = None
    if existing is None:
        outdir.clear()
        manifest = outdir.new_manifest(identity=identity, shard_rows=shard_rows)
        _record_store(outdir, manifest, location, earlier)
        return manifest
    outdir.remove_stale_temp_files()
    store.mark_killed(existing.out_id)
    changed = verify_shards(outdir.path, existing)
    if changed:
        existing.finished = False
    if changed or existing.store != location or existing.earlier_stores_usd != earlier:
        _record_store(outdir, existing, location, earlier)
    return existing


def store_location(store: ResultStore) -> str | None:
    """How the manifest names a store: its resolved path, "none"; None when it has no single file."""
    if isinstance(store, NullStore):
        return "none"
    path = getattr(store, "path", None) if isinstance(store, ResultStore) else None
    if path is None:
        return None
    return path if path == ":memory:" else os.path.realpath(path)


def _refuse_other_store(outdir: OutputDir, manifest: Manifest, location: str | None) -> None:
    if manifest.store is None or location is None or manifest.store == location:
        return
    raise OutputDirError(f"{outdir.path} keeps its answers and spend in the store {manifest.store}, not {location}: "
                         f"pass --store {manifest.store}, or --force to start over with {location} (what the "
                         "directory spent stays counted)")


def _earlier_spend(manifest: Manifest, location: str | None) -> float:
    """What the directory spent outside the ledger of the store now used (counted against the cap)."""
    if location is None or manifest.store is None or (manifest.store == location and location != "none"):
        return manifest.earlier_stores_usd
    # another store (or none): all the directory spent is outside the ledger now used; the old store,
    # when still there, knows spend that a killed run did not write into the manifest
    return max(manifest.spent_usd, manifest.earlier_stores_usd + _ledger_total(manifest.store, manifest.out_id))


def _ledger_total(path: str, out_id: str) -> float:
    if path in ("none", ":memory:") or not os.path.exists(path):
        return 0.0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)) as db:
            row = db.execute("SELECT SUM(COALESCE(charged_usd, cost_usd)) FROM billing WHERE out_id = ?",
                             (out_id,)).fetchone()
    except sqlite3.Error:
        return 0.0
    return float(row[0] or 0.0)


def _record_store(outdir: OutputDir, manifest: Manifest, location: str | None, earlier: float) -> None:
    manifest.store, manifest.earlier_stores_usd = location, earlier
    manifest.spent_usd = max(manifest.spent_usd, earlier)
    outdir.write_manifest(manifest)


def verify_shards(root: Path | Location, manifest: Manifest) -> list[int]:
    """Drop from ``manifest`` every shard whose file is missing or differs; returns their indexes."""
    bad = []
    for index, info in sorted(manifest.shards.items()):
        path = root / info.file
        try:
            digest = _sha256(path)
        except OSError:
            digest = None
        if digest != info.sha256:
            bad.append(index)
            del manifest.shards[index]
    return bad


def _sha256(path: Path | Location) -> str:
    if isinstance(path, Location):  # a shard on an object store
        data = path.read_bytes()
        if data is None:
            raise FileNotFoundError(str(path))
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
