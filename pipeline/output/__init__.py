"""The output directory: shards, manifest, lock, result store and resume, local or object store."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.core.storage import is_uri
from pipeline.output.errors import OutputDirError, OutputDirLocked
from pipeline.output.outdir import OutputDir

__all__ = ["OutputDir", "OutputDirError", "OutputDirLocked", "open_output_dir"]


def open_output_dir(path: str | Path, *, kept: list[pa.Field] | None = None) -> OutputDir:
    """The output folder at a local path or an object-store URI (``s3://``, ``gs://``, ``abfs://``).

    ``kept``: input columns carried into the shards after the label columns (``--keep-columns``).
    """
    if isinstance(path, str) and is_uri(path) and not path.startswith("file://"):
        from pipeline.output.remote import RemoteOutputDir

        return RemoteOutputDir(path, kept=kept)
    local = path[len("file://"):] if isinstance(path, str) and path.startswith("file://") else path
    return OutputDir(local, kept=kept)
