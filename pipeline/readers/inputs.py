"""The input set: checked input files, and the rows they hold as batches in a stable order."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from pipeline.readers import csv, jsonl, parquet
from pipeline.readers.base import Chunk, InputError, InputFile, RowBatch, one_line, to_text
from pipeline.readers.kept import KeptColumns, merge_fields, resolve
from pipeline.readers.located import Located
from pipeline.readers.paths import locate

#: plain local JSONL files are counted up front (for ``total_rows``) up to this many bytes in all.
COUNT_JSONL_BYTES = 1 << 30
#: the same for CSV, which must be parsed to be counted.
COUNT_CSV_BYTES = 256 << 20
#: rows between two seek points of a plain JSON Lines file (a reader skipping rows reads fewer than this)
INDEX_EVERY = 4096
#: files checked at once (opening Parquet footers on an object store is latency-bound).
CHECK_THREADS = 16
_READ_ERRORS = (OSError, EOFError, UnicodeDecodeError, pa.ArrowException)


@dataclass(slots=True)
class _Input:
    file: Located
    id_column: str | None  # the column ids come from in this file; None: synthetic ids
    rows: int | None = None  # exact number of rows, when known
    at_least: int = 0  # a lower bound on the number of rows
    metadata: Any = None  # the Parquet footer
    kept: KeptColumns | None = None  # where the kept columns come from (None: none kept)
    marks: list[jsonl.RowStart] | None = None  # where rows of a plain JSON Lines file start (seek points)


class InputSet:
    """Checked input files and their rows, streamed in bounded batches.

    Rows come in a stable order: files sorted by path, rows in file order, at most ``limit`` rows.

    >>> inputs = open_inputs(["data/"], text_column="text")  # doctest: +SKIP
    >>> for batch in inputs.batches(batch_size=1024):  # doctest: +SKIP
    ...     print(batch.source, len(batch.ids))
    """

    def __init__(self, inputs: list[_Input], *, text_column: str, id_column: str | None, limit: int | None,
                 keep_columns: Sequence[str] = ()) -> None:
        self._inputs = inputs
        self.keep_columns = list(keep_columns)
        #: the kept columns' Arrow types (Parquet: the file's; text for JSON Lines, CSV and partition folders)
        self.kept_fields: list[pa.Field] = merge_fields(
            [(i.file.path, i.kept.fields) for i in inputs if i.kept is not None]) if keep_columns else []
        self.text_column = text_column
        self.id_column = id_column
        self.limit = limit
        self.files: list[InputFile] = [InputFile(i.file.path, i.file.size, i.file.mtime) for i in inputs]
        self.total_rows: int | None = _total(inputs, limit)

    def __repr__(self) -> str:
        return f"InputSet({len(self.files)} files, total_rows={self.total_rows}, limit={self.limit})"

    def identity(self) -> str:
        """A stable hash of the resolved files, their sizes and the id and text columns."""
        files = [
            [os.path.realpath(i.file.fs_path) if i.file.fs is None else i.file.key, i.file.size] for i in self._inputs
        ]
        blob = orjson.dumps({"files": files, "text_column": self.text_column, "id_column": self.id_column})
        return hashlib.sha256(blob).hexdigest()[:16]

    def index_rows(self, *, every: int = INDEX_EVERY) -> list[str]:
        """Count the rows of plain JSON Lines files not counted yet, and note where every ``every``-th row
        starts, so that a reader skipping rows seeks instead of reading them (one pass over each file).

        Returns the files that cannot be indexed so (compressed JSON Lines, CSV): a reader skipping rows
        reads them from their start. Updates ``total_rows`` when every file's length is then known.
        """
        unindexed = []
        for inp in self._inputs:
            f = inp.file
            if f.format == "parquet" or inp.marks is not None:
                continue
            if f.format != "jsonl" or f.compression is not None:
                unindexed.append(f.path)
                continue
            try:
                rows, inp.marks = jsonl.row_index(f, every=every)
            except _READ_ERRORS as exc:
                raise InputError(f"{f.path}: cannot read ({one_line(exc)})") from None
            _counted(inp, rows, None)
        self.total_rows = _total(self._inputs, self.limit)
        return unindexed

    def batches(self, *, batch_size: int = 4096, skip_rows: int = 0) -> Iterator[RowBatch]:
        """Batches of at most ``batch_size`` rows, never spanning two files.

        ``skip_rows`` skips the first rows of the whole input (within ``limit``): Parquet row
        groups and files of known length are skipped without reading them.
        """
        if batch_size < 1 or skip_rows < 0:
            raise ValueError("batch_size must be ≥ 1 and skip_rows ≥ 0")
        end = self.limit if self.limit is not None else float("inf")
        start = 0  # position, in the whole input, of the current file's first row
        for inp in self._inputs:
            if start >= end:
                return
            if inp.rows is not None and start + inp.rows <= skip_rows:
                start += inp.rows
                continue
            rows = yield from self._file_batches(inp, start, end, skip_rows, batch_size)
            if rows is None:
                return
            start += rows

    def _file_batches(
        self, inp: _Input, start: int, end: float, skip_rows: int, batch_size: int
    ) -> Generator[RowBatch, None, int | None]:
        """One file's batches; returns its number of rows, or None when ``end`` was reached in it."""
        source, name = inp.file.path, inp.file.name
        row = skip = max(0, skip_rows - start)  # row: index in the file of the next row to yield
        chunks = self._chunks(inp, skip, batch_size)
        ids: list[str] = []
        texts: list[str | None] = []
        errors: list[str | None] | None = None
        kept: list[list[Any]] | None = [[] for _ in inp.kept.fields] if inp.kept is not None else None
        try:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration as stop:
                    rows: int | None = stop.value
                    break
                except _READ_ERRORS as exc:
                    raise InputError(f"{source}: {one_line(exc)}") from None
                n = len(chunk.texts)
                room = end - start - row
                if n > room:
                    n = int(room)
                    chunk = Chunk(
                        chunk.ids[:n] if chunk.ids is not None else None,
                        chunk.texts[:n],
                        chunk.errors[:n] if chunk.errors is not None else None,
                        chunk.extra,  # kept values are cut to n below
                    )
                if chunk.errors is not None and errors is None:
                    errors = [None] * len(texts)
                ids.extend(_ids(chunk.ids, name, row, n))
                texts.extend(chunk.texts)
                if kept is not None and inp.kept is not None:
                    values = inp.kept.values(chunk.extra or {}, len(chunk.texts), as_text=inp.file.format != "parquet")
                    for column, new in zip(kept, values, strict=True):
                        column.extend(new[:n])
                if errors is not None:
                    errors.extend(chunk.errors if chunk.errors is not None else [None] * n)
                row += n
                while len(texts) >= batch_size:
                    yield _batch(ids[:batch_size], texts[:batch_size], errors, batch_size, source,
                                 None if kept is None else [c[:batch_size] for c in kept])
                    del ids[:batch_size], texts[:batch_size]
                    for column in kept or ():
                        del column[:batch_size]
                    if errors is not None:
                        del errors[:batch_size]
                        if not any(e is not None for e in errors):
                            errors = None
                if start + row >= end:
                    rows = None
                    break
        finally:
            chunks.close()
        if texts:
            yield _batch(ids, texts, errors, len(texts), source, kept)
        return rows

    def _chunks(self, inp: _Input, skip: int, batch_size: int) -> Generator[Chunk, None, int]:
        f, text, ident = inp.file, self.text_column, inp.id_column
        keep = inp.kept.from_file if inp.kept is not None else []
        if f.format == "parquet":
            return parquet.chunks(
                f, metadata=inp.metadata, text_column=text, id_column=ident, skip=skip, batch_size=batch_size,
                keep=keep,
            )
        if f.format == "csv":
            return csv.chunks(f, text_column=text, id_column=ident, skip=skip, keep=keep)
        start = None
        for mark in inp.marks or ():  # the last seek point at or before the first row wanted
            if mark[0] > skip:
                break
            start = mark
        return jsonl.chunks(f, text_column=text, id_column=ident, skip=skip, keep=keep, start=start)


def _batch(ids: list[str], texts: list[str | None], errors: list[str | None] | None, n: int, source: str,
           kept: list[list[Any]] | None = None) -> RowBatch:
    if errors is not None:
        errors = errors[:n]
        if not any(e is not None for e in errors):
            errors = None
    return RowBatch(ids=ids, texts=texts, errors=errors, source=source, kept=kept)


def _ids(raw: list[Any] | None, name: str, first: int, n: int) -> list[str]:
    """Ids as strings; rows without one get ``<file name>:<row number in the file>``."""
    if raw is None:
        return [f"{name}:{i}" for i in range(first, first + n)]
    ids = raw[:n] if len(raw) != n else raw
    if all(type(v) is str and v for v in ids):
        return ids
    return [
        v if type(v) is str and v else f"{name}:{i}" if v is None or v == "" else to_text(v)
        for i, v in enumerate(ids, first)
    ]


def _total(inputs: list[_Input], limit: int | None) -> int | None:
    if all(i.rows is not None for i in inputs):
        total = sum(i.rows for i in inputs if i.rows is not None)
        return total if limit is None else min(total, limit)
    if limit is not None and sum(i.at_least for i in inputs) >= limit:
        return limit
    return None


def open_inputs(
    paths: Sequence[str], *, text_column: str = "text", id_column: str | None = None, limit: int | None = None,
    keep_columns: Sequence[str] = (),
) -> InputSet:
    """Expand files, folders (recursively, supported types only, sorted) and globs; check every file.

    Raises InputError, before any row is read, for a missing path, a glob matching nothing, a folder
    without inputs, an unsupported file type, an empty file, an unreadable Parquet footer and a
    missing text, id or kept column. Without ``id_column``, a column ``id`` is used where a file has one,
    else ids are ``<file name relative to the inputs' common folder>:<row number in the file>``.

    >>> inputs = open_inputs(["data/*.jsonl"], text_column="body", limit=1000)  # doctest: +SKIP
    >>> inputs.total_rows  # doctest: +SKIP
    1000
    """
    if isinstance(paths, str):
        paths = [paths]
    if limit is not None and limit < 0:
        raise ValueError("limit must be ≥ 0")
    files = locate(list(paths))
    budgets = {"jsonl": COUNT_JSONL_BYTES, "csv": COUNT_CSV_BYTES}
    counted = []
    for f in files:
        count = f.fs is None and f.compression is None and f.format in budgets and f.size is not None
        if count:
            budgets[f.format] -= f.size or 0
            count = budgets[f.format] >= 0
        counted.append(count)

    def check(item: tuple[Located, bool]) -> _Input:
        return _check(item[0], text_column=text_column, id_column=id_column, count=item[1], limit=limit,
                      keep=keep_columns)

    items = list(zip(files, counted, strict=True))
    if len(items) == 1:
        inputs = [check(items[0])]
    else:
        pool = ThreadPoolExecutor(min(CHECK_THREADS, len(items)))
        try:
            inputs = list(pool.map(check, items))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return InputSet(inputs, text_column=text_column, id_column=id_column, limit=limit, keep_columns=keep_columns)


def _check(f: Located, *, text_column: str, id_column: str | None, count: bool, limit: int | None,
           keep: Sequence[str] = ()) -> _Input:
    if f.size == 0:
        raise InputError(f"{f.path}: empty file (0 bytes)")
    inp = _Input(f, id_column)
    try:
        if f.format == "parquet":
            inp.metadata, has_id = parquet.probe(f, text_column=text_column, id_column=id_column)
            inp.rows = inp.at_least = inp.metadata.num_rows
            if keep:
                schema = inp.metadata.schema.to_arrow_schema()
                inp.kept = resolve(f.path, keep, schema.names, schema)
        elif f.format == "csv":
            has_id = csv.probe(f, text_column=text_column, id_column=id_column)
            if keep:
                inp.kept = resolve(f.path, keep, csv.header(f), None)
            if count:
                _counted(inp, csv.count_rows(f, column=text_column, stop_after=limit), limit)
        else:
            first = jsonl.first_object(f, text_column=text_column, id_column=id_column)
            has_id = "id" in first
            if keep:
                inp.kept = resolve(f.path, keep, list(first), None)
            if count:
                rows, inp.marks = jsonl.row_index(f, every=INDEX_EVERY, stop_after=limit)
                _counted(inp, rows, limit)
    except _READ_ERRORS as exc:
        raise InputError(f"{f.path}: cannot read ({one_line(exc)})") from None
    if id_column is None:
        inp.id_column = "id" if has_id else None
    return inp


def _counted(inp: _Input, rows: int, limit: int | None) -> None:
    inp.at_least = rows
    if limit is None or rows <= limit:
        inp.rows = rows
