"""Resume rules: what an output directory holds, whether this job may continue it, what is left.

- A directory is one job: its identity (input, limit, policies and their versions, model, effort,
  output format, prompt version) must match, else the run refuses unless ``--force``.
- ``--force`` starts it over (the store's answers are reused, so nothing is paid twice).
- A shard counts as done only while its file is on disk with the hash the manifest recorded: a
  missing or altered shard is dropped from the manifest and rebuilt from the store.
- Runs of the directory left ``running`` by a process that is gone are marked ``killed``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.outdir import Manifest, OutputDir, OutputDirError
from pipeline.storage import Location
from pipeline.store import ResultStore

__all__ = ["identity_changes", "open_manifest", "verify_shards"]


def identity_changes(old: dict, new: dict) -> list[str]:
    """The identity keys whose values differ (a key only one side has counts)."""
    return [k for k in {**old, **new} if old.get(k) != new.get(k)]


def open_manifest(outdir: OutputDir, identity: dict, *, shard_rows: int, force: bool,
                  store: ResultStore) -> Manifest:
    """The manifest to continue, or a new one; raises OutputDirError for a different job."""
    try:
        existing = outdir.read_manifest()
    except OutputDirError:
        if not force:
            raise
        outdir.clear()  # --force starts over even from an unreadable manifest
        existing = None
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
        return outdir.new_manifest(identity=identity, shard_rows=shard_rows)
    outdir.remove_stale_temp_files()
    store.mark_killed(existing.out_id)
    if verify_shards(outdir.path, existing):
        existing.finished = False
        outdir.write_manifest(existing)
    return existing


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
