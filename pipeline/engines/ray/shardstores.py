"""Where a cluster run keeps its per-shard result stores: ``OUT/results/part-00007.sqlite``.

On a local or shared file system a process opens the store where it lies. SQLite cannot run on an
object store, so for an ``s3://`` (``gs://``, ``abfs://``) output a process works on a local copy:
`checkout` downloads the shard's store (when an earlier run left one), `checkin` uploads a
consistent snapshot (SQLite's backup API, so a store being written is never copied half-way). A
shard under way uploads its store every `SNAPSHOT_S` seconds as well, so a process killed mid-shard
loses at most that much of its answers; the next run, on any machine, takes the rest from the bucket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from pipeline.core.storage import Location, is_uri

__all__ = ["RESULTS_DIR", "SNAPSHOT_S", "ShardStores"]

RESULTS_DIR = "results"
#: seconds between uploads of a shard's store while it is being labelled (object-store outputs)
SNAPSHOT_S = 30.0


def _store_name(index: int) -> str:
    return f"part-{index:05d}.sqlite"


class ShardStores:
    """The per-shard stores of one output folder (see the module docstring)."""

    def __init__(self, out: str | Path) -> None:
        out = str(out)
        self.remote = is_uri(out) and not out.startswith("file://")
        self.out = out
        if self.remote:
            self.location: Location | None = Location.parse(out)
            self.folder = Path(tempfile.mkdtemp(prefix="moderate-stores-"))
        else:
            self.location = None
            self.folder = Path(out[len("file://"):] if out.startswith("file://") else out) / RESULTS_DIR

    def path(self, index: int) -> Path:
        """Where this process opens shard ``index``'s store (a local copy for an object store)."""
        return self.folder / _store_name(index)

    def checkout(self, index: int) -> Path:
        """The shard's store, ready to open: downloaded from the object store when one is there."""
        path = self.path(index)
        if self.location is not None:
            data = (self.location / RESULTS_DIR / _store_name(index)).read_bytes()
            path.parent.mkdir(parents=True, exist_ok=True)
            for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                stale.unlink(missing_ok=True)
            if data is not None:
                path.write_bytes(data)
        return path

    def checkin(self, index: int) -> None:
        """Upload a consistent snapshot of the shard's store (nothing to do on a file system)."""
        path = self.path(index)
        if self.location is None or not path.exists():
            return
        _upload(self.location / RESULTS_DIR / _store_name(index), snapshot(path))

    def every(self) -> list[Path]:
        """Every shard's store as a local file (downloaded afresh for an object store)."""
        if self.location is None:
            return sorted(self.folder.glob("part-*.sqlite"))
        paths = []
        for remote in (self.location / RESULTS_DIR).glob("part-*.sqlite"):
            data = remote.read_bytes()
            if data is None:
                continue
            local = self.folder / "read" / remote.name
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
            paths.append(local)
        return paths

    def put_back(self, local: Path) -> None:
        """A store from `every` was changed: upload it to where it came from."""
        if self.location is not None:
            _upload(self.location / RESULTS_DIR / local.name, snapshot(local))

    def read_file(self, name: str) -> bytes | None:
        """A small file of the output folder (``runs.json``), or None."""
        if self.location is not None:
            return (self.location / name).read_bytes()
        try:
            return (self.folder.parent / name).read_bytes()
        except FileNotFoundError:
            return None

    def write_file(self, name: str, data: bytes) -> None:
        if self.location is not None:
            (self.location / name).write_bytes(data)
            return
        from pipeline.output.outdir import atomic_write_text

        self.folder.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder.parent / name, data.decode())

    def close(self) -> None:
        """Remove the local copies of an object store's stores."""
        if self.location is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _upload(location: Location, data: bytes) -> None:
    """One upload, seen whole or not at all (on Azure pyarrow's stream would show an empty blob first)."""
    if location.uri.startswith(("abfs://", "abfss://", "az://")):
        from pipeline.output.azurelock import write_whole

        if write_whole(location, data):
            return
    location.write_bytes(data)


def snapshot(path: Path) -> bytes:
    """The store's committed content as one SQLite file, while another connection may be writing it."""
    fd, name = tempfile.mkstemp(suffix=".sqlite", dir=os.path.dirname(path))
    os.close(fd)
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30.0)) as source, \
                contextlib.closing(sqlite3.connect(name)) as copy:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        return Path(name).read_bytes()
    finally:
        Path(name).unlink(missing_ok=True)
