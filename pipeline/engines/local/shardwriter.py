"""Writes complete shards in a thread and records each in the manifest (the run's commit point).

A shard that cannot be written (a full disk, a read-only folder) is reported once through
``on_error``; later shards are then left to the next run, which rebuilds them from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pipeline.output.outdir import Manifest, OutputDir
from pipeline.plan.shards import Shard

__all__ = ["ShardWriter"]


class ShardWriter:
    def __init__(self, outdir: OutputDir, manifest: Manifest, *, on_error: Callable[[str], None],
                 manifest_file: bool = True) -> None:
        self.outdir = outdir
        self.manifest = manifest
        #: False: shards are listed in ``manifest`` in memory only (a cluster's driver records them)
        self.manifest_file = manifest_file
        self._on_error = on_error
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._pending: list[asyncio.Future] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failed = False

    def write(self, shard: Shard) -> None:
        """Queue a complete shard (called on the event loop)."""
        if self.failed:
            return
        self._loop = self._loop or asyncio.get_running_loop()
        labels, shard.labels = shard.labels, []
        self._pending.append(self._loop.run_in_executor(
            self._executor, self._write, shard.index, labels, shard.rows, shard.unsent))

    async def close(self) -> None:
        """Wait for every queued shard, then stop the thread."""
        if self._pending:
            await asyncio.gather(*self._pending)
        self._executor.shutdown(wait=True)

    def _write(self, index: int, labels: list[tuple], rows: int, unsent: int) -> None:
        try:
            info = self.outdir.write_shard(index, labels, input_rows=rows, unsent=unsent)
            self.manifest.shards[index] = info
            if self.manifest_file:
                self.outdir.write_manifest(self.manifest)
        except OSError as exc:
            message = f"cannot write shard {index} in {self.outdir.path}: {exc.strerror or exc}"
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._failed, message)

    def _failed(self, message: str) -> None:
        if not self.failed:
            self.failed = True
            self._on_error(message)
