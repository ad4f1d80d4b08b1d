"""Rows already in memory (a polars DataFrame, a pyarrow Table or RecordBatchReader, dicts) as an input file.

The library's ``run(config, data=...)`` writes them once, as Parquet, to a file named after its content
(under the user's cache folder), and reads that file like any input: the same data gives the same file,
so a rerun resumes and the cache of answers applies as for files on disk.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.readers.base import InputError

__all__ = ["DICT_BATCH_ROWS", "data_cache_dir", "materialize"]

#: dicts converted to Arrow at once
DICT_BATCH_ROWS = 8192


def data_cache_dir() -> Path:
    """Where in-memory inputs are written: ``$XDG_CACHE_HOME/moderate/data`` (default ``~/.cache``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "moderate" / "data"


def materialize(data: Any, *, columns: list[str], text_column: str, folder: Path | None = None) -> str:
    """Write ``data``'s ``columns`` (those it has) to ``folder/<content hash>.parquet`` and return the path.

    Raises `InputError` (one line) for a type it cannot read or a text column it lacks.
    """
    folder = folder or data_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"data=: cannot create {folder} ({exc.strerror or exc})") from None
    batches = _batches(data, columns)
    first = next(batches, None)
    if first is None:
        raise InputError("data=: no rows and no columns")
    if text_column not in first.schema.names:
        raise InputError(f"data=: no column {text_column!r} (columns: {', '.join(_names(data)) or 'none'}); "
                         "set text_column")
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".data-", suffix=".parquet.tmp")
    os.close(handle)
    try:
        with pq.ParquetWriter(temp, first.schema) as writer:
            for batch in _chain(first, batches):
                writer.write_batch(_conform(batch, first.schema))
        digest = _sha256(temp)
        target = folder / f"{digest[:32]}.parquet"
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return str(target)


def _names(data: Any) -> list[str]:
    """The column names of a frame or table, for a message (none for an iterable of dicts)."""
    for names in (getattr(data, "column_names", None), getattr(data, "columns", None),
                  getattr(getattr(data, "schema", None), "names", None)):
        if isinstance(names, list):
            return [str(n) for n in names]
    return []


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _batches(data: Any, columns: list[str]) -> Iterator[pa.RecordBatch]:
    if type(data).__module__.startswith("polars"):
        data = data.collect() if hasattr(data, "collect") else data
        # Arrow has no 128-bit integers: ids past 64 bits are kept as text, as from dicts
        wide = [s.cast(str) for s in data.get_columns() if str(s.dtype) in ("Int128", "UInt128")]
        data = (data.with_columns(wide) if wide else data).to_arrow()
    if isinstance(data, pa.Table):
        table = data.select([c for c in columns if c in data.column_names])
        yield from table.to_batches(max_chunksize=65536) or [pa.RecordBatch.from_pylist([], schema=table.schema)]
    elif isinstance(data, pa.RecordBatchReader):
        wanted = [c for c in columns if c in data.schema.names]
        empty = True
        for batch in data:
            empty = False
            yield batch.select(wanted)
        if empty:
            yield pa.RecordBatch.from_pylist([], schema=pa.schema([data.schema.field(c) for c in wanted]))
    elif isinstance(data, pa.RecordBatch):
        yield data.select([c for c in columns if c in data.schema.names])
    elif isinstance(data, Iterable) and not isinstance(data, str | bytes | Mapping):
        yield from _dict_batches(data, columns)
    else:
        raise InputError(f"data=: expected a polars DataFrame, a pyarrow Table or RecordBatchReader, or an "
                         f"iterable of dicts; got {type(data).__name__}")


def _dict_batches(rows: Iterable[Any], columns: list[str]) -> Iterator[pa.RecordBatch]:
    chunk: list[dict[str, Any]] = []
    number = 0
    for number, row in enumerate(rows, 1):
        if not isinstance(row, Mapping):
            raise InputError(f"data=: row {number} is a {type(row).__name__}, not a dict")
        chunk.append({c: row.get(c) for c in columns})
        if len(chunk) == DICT_BATCH_ROWS:
            yield _dicts_to_batch(chunk, columns)
            chunk = []
    if chunk:
        yield _dicts_to_batch(chunk, columns)
    elif number == 0:  # no rows (a query that found none tonight): a run with nothing to label, not an error
        yield pa.RecordBatch.from_pylist([], schema=pa.schema([(c, pa.string()) for c in columns]))


def _dicts_to_batch(chunk: list[dict[str, Any]], columns: list[str]) -> pa.RecordBatch:
    try:
        return pa.RecordBatch.from_pylist(chunk)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):  # mixed types, ints past 64 bits: as text
        text = [{c: None if r[c] is None else str(r[c]) for c in columns} for r in chunk]
        return pa.RecordBatch.from_pylist(text)


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    try:
        return pa.RecordBatch.from_arrays([batch.column(n).cast(f.type) if n in batch.schema.names
                                           else pa.nulls(len(batch), f.type)
                                           for n, f in zip(schema.names, schema, strict=True)], schema=schema)
    except (pa.ArrowException, KeyError) as exc:
        raise InputError(f"data=: a later batch's columns do not match the first's ({exc})") from None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
