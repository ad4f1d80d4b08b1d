"""Parquet inputs, streamed in record batches of the needed columns only."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.readers.base import Chunk, InputError, columns_hint, one_line, to_texts
from pipeline.readers.located import Located, open_random_access


@contextmanager
def _open(f: Located, metadata: pq.FileMetaData | None = None) -> Iterator[pq.ParquetFile]:
    source = open_random_access(f)
    try:
        # Pre-buffering coalesces a row group's reads: worth it against an object store's latency,
        # but on a local disk it only holds whole row groups in memory (~50 MB more peak RSS).
        with pq.ParquetFile(source, metadata=metadata, pre_buffer=f.fs is not None) as pf:
            yield pf
    finally:
        if not isinstance(source, str):
            source.close()


def probe(f: Located, *, text_column: str, id_column: str | None) -> tuple[pq.FileMetaData, bool]:
    """Open the footer and check the columns: ``(metadata, has an "id" column)``."""
    try:
        with _open(f) as pf:
            metadata, names = pf.metadata, pf.schema_arrow.names
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{f.path}: not a readable Parquet file ({one_line(exc)})") from None
    if text_column not in names:
        raise InputError(f"{f.path}: no column {text_column!r} (columns: {columns_hint(names)})")
    if id_column is not None and id_column not in names:
        raise InputError(f"{f.path}: no id column {id_column!r} (columns: {columns_hint(names)})")
    return metadata, "id" in names


def chunks(
    f: Located,
    *,
    metadata: pq.FileMetaData,
    text_column: str,
    id_column: str | None,
    skip: int = 0,
    batch_size: int = 4096,
    keep: Sequence[str] = (),
) -> Generator[Chunk, None, int]:
    """Rows after the first ``skip`` (whole row groups skipped by metadata); returns the file's rows."""
    first = 0
    while first < metadata.num_row_groups and skip >= (rows := metadata.row_group(first).num_rows):
        skip -= rows
        first += 1
    if first == metadata.num_row_groups:
        return metadata.num_rows
    groups = list(range(first, metadata.num_row_groups))
    columns = list(dict.fromkeys([text_column] + ([id_column] if id_column else []) + list(keep)))
    with _open(f, metadata) as pf:
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=columns):
            if skip:
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                batch = batch.slice(skip)
                skip = 0
            texts = to_texts(_values(batch.column(text_column)))
            ids = _values(batch.column(id_column)) if id_column else None
            extra = {c: _kept_values(batch.column(c)) for c in keep} if keep else None
            yield Chunk(ids, texts, None, extra)
    return metadata.num_rows


def _kept_values(column: pa.Array) -> list[Any]:
    """A kept column's values as the shards take them back (`pipeline.core.arrowcols.to_array`).

    Nanosecond times become their integer count: Arrow makes Python values of them only through
    pandas, which is no dependency (and the shard's type turns the integers back, exactly).
    """
    unit = getattr(column.type, "unit", None)
    if unit == "ns" and not pa.types.is_dictionary(column.type):
        return column.cast(pa.int64()).to_pylist()
    return _values(column)


def _values(column: pa.Array) -> list[Any]:
    """The column as Python values; text a writer stored as invalid UTF-8 gets U+FFFD for its bad bytes.

    Parquet readers do not check that string columns hold UTF-8, and Arrow's conversion to Python
    raises on the first bad value; binary columns are decoded the same way (`base.to_text`).
    """
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        if pa.types.is_dictionary(column.type):
            return _values(column.dictionary_decode())
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            raw = column.view(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
            return [None if v is None else v.decode("utf-8", "replace") for v in raw.to_pylist()]
        raise
