"""The output directory: atomic shard files, the manifest of finished shards, the run lock.

Layout::

    OUT/labels/part-00000.parquet   labelled shards (zstd), input rows [k*R, (k+1)*R) x policies
    OUT/manifest.json               what this directory is (input, policies, model, store), finished
                                    shards, and what it has spent
    OUT/store.sqlite                result store and billing ledger (unless --store points elsewhere)
    OUT/cost_report.json|.md        written at the end of every run
    OUT/.lock                       held by the running process

A shard is written to a hidden temporary name, fsynced and renamed into place, and only then listed
in the manifest (itself replaced atomically), so a crash never leaves a half-written shard visible.

Nothing is deleted that the manifest does not list: a folder without a manifest must be empty (but
for the lock and the store) before a run writes into it. Output folders on object stores
(``s3://`` ...) are handled by `pipeline.output.remote` with the same guarantees;
`open_output_dir` picks the right one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.labels import to_table
from pipeline.core.storage import Location
from pipeline.output.errors import OutputDirError, OutputDirLocked
from pipeline.output.outfiles import temp_name

MANIFEST_VERSION = 1
#: what a folder without a manifest may hold and still be used: the lock and the result store.
FRESH_OK = frozenset({".lock", "store.sqlite", "store.sqlite-wal", "store.sqlite-shm", "store.sqlite-journal"})
REPORT_FILES = ("cost_report.json", "cost_report.md")
#: shard names this program writes (local, and unique names on object stores).
SHARD_NAME = re.compile(r"part-\d{5}(-[0-9a-f]{8})?\.parquet")


@dataclass(slots=True)
class ShardInfo:
    file: str
    labels: int
    input_rows: int
    sha256: str
    #: rows not sent because the run stopped early (budget, signal, fatal error); such a shard is
    #: rewritten by the next run.
    unsent: int = 0

    @property
    def complete(self) -> bool:
        return self.unsent == 0


@dataclass(slots=True)
class Manifest:
    out_id: str
    identity: dict[str, Any]
    shard_rows: int
    shards: dict[int, ShardInfo] = field(default_factory=dict)
    #: set when every input row is in a complete shard.
    finished: bool = False
    total_rows: int | None = None
    #: the job's settings, kept when the directory was prepared for batch files (`pipeline.engines.batchfiles`).
    job: dict[str, Any] | None = None
    #: the result store the directory's answers and ledger are in ("none" for --store none)
    store: str | None = None
    #: spent through stores whose ledger is not the current store's (another store, --store none)
    earlier_stores_usd: float = 0.0
    #: everything the directory has spent, as of the end of its last run (the current store included)
    spent_usd: float = 0.0
    #: what the folder holds, for the commands that read it later (export, eval, report): the input files
    #: and columns, the model, the output format and each policy's name, version and text
    description: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        data = {
            "version": MANIFEST_VERSION,
            "out_id": self.out_id,
            "identity": self.identity,
            "shard_rows": self.shard_rows,
            "finished": self.finished,
            "total_rows": self.total_rows,
            "shards": {f"{k:05d}": {"file": s.file, "labels": s.labels, "input_rows": s.input_rows,
                                    "sha256": s.sha256, "unsent": s.unsent}
                       for k, s in sorted(self.shards.items())},
        }
        if self.job is not None:
            data["job"] = self.job
        if self.store is not None:
            data.update(store=self.store, earlier_stores_usd=self.earlier_stores_usd, spent_usd=self.spent_usd)
        if self.description is not None:
            data["description"] = self.description
        return orjson.dumps(data, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        data = orjson.loads(raw)
        shards = {int(k): ShardInfo(**v) for k, v in data.get("shards", {}).items()}
        return cls(data["out_id"], data["identity"], data["shard_rows"], shards,
                   data.get("finished", False), data.get("total_rows"), data.get("job"), data.get("store"),
                   data.get("earlier_stores_usd", 0.0), data.get("spent_usd", 0.0), data.get("description"))


def is_output_folder(manifest: bytes) -> bool:
    """Whether a ``manifest.json`` is one of ours (its folder is an output folder, not input data)."""
    try:
        data = orjson.loads(manifest)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and {"out_id", "identity", "shard_rows"} <= data.keys()


class OutputDir:
    """Owns the files of one output directory."""

    #: a folder on this machine (False: on an object store, see `pipeline.output.remote`)
    local = True

    def __init__(self, path: str | Path, *, kept: list[pa.Field] | None = None) -> None:
        self.path = Path(path)
        #: input columns carried into the shards after the label columns (``--keep-columns``)
        self.kept: list[pa.Field] = kept or []
        self.labels = self.path / "labels"
        self.manifest_path = self.path / "manifest.json"
        self._lock_file: Any = None

    # -- lock --------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the run lock; refuse when a live process holds it (a dead one's lock is free).

        Also refuses a folder that holds files but no manifest: it is not ours to write into.
        """
        self.check_usable()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / ".lock", "a+")  # noqa: SIM115 - held for the whole run
        except OSError as exc:
            raise OutputDirError(f"{self.path}: cannot create output directory ({exc.strerror})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputDirLocked(f"{self.path}: another run is using this directory ({holder})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock_file = handle

    def unlock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.seek(0)
                self._lock_file.truncate()
            self._lock_file.close()
            self._lock_file = None

    # -- manifest ----------------------------------------------------------------------------
    def read_manifest(self) -> Manifest | None:
        try:
            raw = self.manifest_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return Manifest.from_json(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise OutputDirError(f"{self.manifest_path}: unreadable manifest ({exc}); use --force "
                                 "to start this directory over") from None

    def new_manifest(self, *, identity: dict[str, Any], shard_rows: int) -> Manifest:
        manifest = Manifest(uuid.uuid4().hex, identity, shard_rows)
        self.write_manifest(manifest)
        return manifest

    def write_manifest(self, manifest: Manifest) -> None:
        _atomic_write(self.manifest_path, manifest.to_json())

    def check_usable(self) -> None:
        """Refuse a folder with files of its own and no manifest (OutputDirError, one line)."""
        if self.manifest_path.exists() or not self.path.is_dir():
            return
        entries = (p for p in self.path.rglob("*") if p.name not in FRESH_OK and not p.is_dir())
        foreign = sorted(str(p.relative_to(self.path)) for p in itertools.islice(entries, 4))
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise OutputDirError(f"{self.path}: not empty and not an output folder (no manifest.json; holds "
                                 f"{shown}); choose a new or empty --out")

    def clear(self) -> None:
        """Remove the shards the manifest lists, the reports and the manifest (``--force``).

        Nothing else is touched: not the store, not a file the manifest does not name. When the
        manifest cannot be read, shards with the names this program gives them are removed.
        """
        if not self.manifest_path.exists():
            return
        try:
            manifest = self.read_manifest()
            shards = [self.path / s.file for s in manifest.shards.values()] if manifest else []
        except OutputDirError:
            shards = [p for p in self.labels.glob("*.parquet") if SHARD_NAME.fullmatch(p.name)]
        for path in shards:
            path.unlink(missing_ok=True)
        self.remove_stale_temp_files()
        for name in REPORT_FILES:
            (self.path / name).unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)

    def default_store(self) -> str:
        """Where the result store lives unless ``--store`` says otherwise."""
        return str(self.path / "store.sqlite")

    def shard_sha256(self, file: str) -> str | None:
        """The SHA-256 of a shard (``labels/part-00000.parquet``) as it is now, or None when it is gone."""
        try:
            return _hash(self.path / file)
        except OSError:
            return None

    def shard_files(self) -> list[Path]:
        """The shard files the manifest lists (what the report counts)."""
        manifest = self.read_manifest()
        return [self.path / s.file for _, s in sorted(manifest.shards.items())] if manifest else []

    # -- shards ------------------------------------------------------------------------------
    def write_shard(self, index: int, rows: list[tuple], *, input_rows: int, unsent: int) -> ShardInfo:
        """Write one shard atomically and return its manifest entry (the caller records it)."""
        self.labels.mkdir(parents=True, exist_ok=True)
        name = f"part-{index:05d}.parquet"
        final = self.labels / name
        temp = temp_name(final)
        try:
            pq.write_table(to_table(rows, self.kept), temp, compression="zstd")
            digest = _fsync_and_hash(temp)
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.labels)
        return ShardInfo(f"labels/{name}", len(rows), input_rows, digest, unsent)

    def remove_stale_temp_files(self) -> None:
        for temp in self.labels.glob(".*.tmp"):
            temp.unlink(missing_ok=True)


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_and_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb+") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        os.fsync(handle.fileno())
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all; a unique temp name lets two commands write one file at once.

    An OSError names ``path`` (not the hidden temp file) so that a message can show it.
    """
    temp = temp_name(path)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # a full disk leaves no half-written file behind
            temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path | Location, text: str) -> None:
    """Write a report file atomically (on an object store, one upload replaces the object)."""
    if isinstance(path, Location):
        path.write_bytes(text.encode())
    else:
        _atomic_write(path, text.encode())
