"""An output folder on an object store (``s3://``, ``gs://``, ``abfs://``) with the local guarantees.

There is no atomic rename on an object store, so a shard is uploaded under a name of its own
(``labels/part-00003-1f2e3d4c.parquet``): an upload is visible whole or not at all, and the
manifest, replaced by one upload, is the commit point. A shard the manifest does not list is the
leftover of a killed run and is removed when the next run takes the lock; a shard that is
replaced is removed once the manifest no longer lists it.

The run lock is an object (``OUT/.lock``) created with a conditional write (``If-None-Match: *``,
see `pipeline.output.s3lock`; a generation precondition on ``gs://``, `pipeline.output.gcslock`;
the same conditions on ``abfs://``, `pipeline.output.azurelock`).
Where that is not available, the run refuses unless ``[storage] lock =
false`` says one writer at a time is guaranteed by other means (one scheduled job).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.labels import to_table
from pipeline.core.storage import Location, StorageError, current
from pipeline.output.outdir import REPORT_FILES, Manifest, OutputDir, OutputDirError, ShardInfo

_OURS = re.compile(r"part-\d{5}-[0-9a-f]{8}\.parquet")


def _azure_write_whole(location: Location, data: bytes) -> bool:
    from pipeline.output.azurelock import write_whole

    return write_whole(location, data)


def upload_whole(location: Location, data: bytes) -> None:
    """Replace an object in one upload, so that readers see the old object or the new one (on Azure, one
    Put Blob: pyarrow's stream would create the blob empty first)."""
    if not (location.uri.startswith(("abfs://", "abfss://", "az://")) and _azure_write_whole(location, data)):
        location.write_bytes(data)


class RemoteOutputDir(OutputDir):
    """The same interface as `OutputDir`, on an object store."""

    local = False

    def __init__(self, uri: str, *, kept: list[pa.Field] | None = None) -> None:
        self.kept: list[pa.Field] = kept or []
        try:
            self.path = Location.parse(uri)  # type: ignore[assignment]
        except StorageError as exc:
            raise OutputDirError(str(exc)) from None
        self.labels = self.path / "labels"  # type: ignore[assignment]
        self.manifest_path = self.path / "manifest.json"  # type: ignore[assignment]
        self._lock = None
        self._lock_file = None
        self._listed: set[str] = set()

    # -- lock --------------------------------------------------------------------------------
    def lock(self) -> None:
        self.path.probe()  # an unreachable store fails here, within the configured time
        self.check_usable()
        if not current().lock:
            return
        if self.path.uri.startswith("s3://"):
            from pipeline.output.s3lock import S3Lock

            self._lock = S3Lock(self.path / ".lock")
        elif self.path.uri.startswith(("gs://", "gcs://")):
            from pipeline.output.gcslock import GcsLock

            self._lock = GcsLock(self.path / ".lock")
        elif self.path.uri.startswith(("abfs://", "abfss://", "az://")):
            from pipeline.output.azurelock import AzureLock

            self._lock = AzureLock(self.path / ".lock")
        else:
            raise OutputDirError(
                f"{self.path}: no run lock is available on this object store (s3://, gs:// and abfs:// have "
                "conditional writes here); set [storage] lock = false if only one run at a time writes to this folder")
        self._lock.acquire()

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def check_usable(self) -> None:
        if self.read_manifest() is not None:
            return
        foreign = [f.uri for f in self.path.files() if f.name != ".lock"]
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise OutputDirError(f"{self.path}: not empty and not an output folder (no manifest.json; holds "
                                 f"{shown}); choose a new or empty --out")

    # -- manifest ----------------------------------------------------------------------------
    def read_manifest(self) -> Manifest | None:
        raw = self.manifest_path.read_bytes()
        if raw is None:
            return None
        try:
            manifest = Manifest.from_json(raw)
        except Exception as exc:
            raise OutputDirError(f"{self.manifest_path}: unreadable manifest ({exc}); use --force "
                                 "to start this directory over") from None
        self._listed = {s.file for s in manifest.shards.values()}
        return manifest

    def write_manifest(self, manifest: Manifest) -> None:
        if self._lock is not None:
            self._lock.check()
        upload_whole(self.manifest_path, manifest.to_json())
        listed = {s.file for s in manifest.shards.values()}
        for old in self._listed - listed:  # replaced shards: no longer committed, now removed
            (self.path / old).delete()
        self._listed = listed

    def clear(self) -> None:
        raw = self.manifest_path.read_bytes()
        if raw is None:
            return
        try:
            manifest = Manifest.from_json(raw)
            shards = [self.path / s.file for s in manifest.shards.values()]
        except Exception:
            shards = [f for f in self.labels.glob("*.parquet") if _OURS.fullmatch(f.name)]
        for shard in shards:
            shard.delete()
        for name in REPORT_FILES:
            (self.path / name).delete()
        self.manifest_path.delete()
        self._listed = set()

    def default_store(self) -> str:
        """A local file: SQLite does not run on an object store (``--store`` picks another)."""
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.path.uri.split("://", 1)[1]).strip("_")
        scheme = self.path.uri.split("://", 1)[0]
        return str(Path(cache) / "moderate" / "stores" / scheme / safe / "store.sqlite")

    def shard_files(self) -> list[Location]:  # type: ignore[override]
        manifest = self.read_manifest()
        return [self.path / s.file for _, s in sorted(manifest.shards.items())] if manifest else []

    # -- shards ------------------------------------------------------------------------------
    def write_shard(self, index: int, rows: list[tuple], *, input_rows: int, unsent: int) -> ShardInfo:
        """Upload one shard under a new name; it counts once the manifest lists it."""
        sink = pa.BufferOutputStream()
        pq.write_table(to_table(rows, self.kept), sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        name = f"part-{index:05d}-{uuid.uuid4().hex[:8]}.parquet"
        (self.labels / name).write_bytes(data)
        return ShardInfo(f"labels/{name}", len(rows), input_rows, hashlib.sha256(data).hexdigest(), unsent)

    def shard_sha256(self, file: str) -> str | None:
        """The SHA-256 of a shard as it is in the store now, or None when it is gone."""
        data = (self.path / file).read_bytes()
        return None if data is None else hashlib.sha256(data).hexdigest()

    def remove_stale_temp_files(self) -> None:
        """Shards a killed run uploaded but never committed to the manifest."""
        for shard in self.labels.glob("*.parquet"):
            if _OURS.fullmatch(shard.name) and f"labels/{shard.name}" not in self._listed:
                shard.delete()
