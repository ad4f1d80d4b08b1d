"""CSV inputs (optionally compressed), streamed by pyarrow's CSV reader, needed columns only, as strings.

Every cell is text: an empty cell is ``""``, never null, and "NA" or "null" stay as written.
"""

from __future__ import annotations

import csv
from collections.abc import Generator

import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.readers.base import Chunk, InputError, columns_hint
from pipeline.readers.paths import Located, open_stream

#: bytes parsed per step. A row longer than that is read by starting the file again with blocks
#: ``BLOCK_GROWTH`` times bigger (up to ``MAX_BLOCK_SIZE``), skipping the rows already read.
BLOCK_SIZE = 1 << 20
BLOCK_GROWTH = 8
MAX_BLOCK_SIZE = 512 << 20
_HEADER_LIMIT = 1 << 20


def header(f: Located) -> list[str]:
    """The column names on the first line."""
    data = b""
    with open_stream(f) as stream:
        while b"\n" not in data and len(data) < _HEADER_LIMIT:
            piece = stream.read(64 << 10)
            if not piece:
                break
            data += piece
    line = data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace")
    return next(csv.reader([line]), [])


def probe(f: Located, *, text_column: str, id_column: str | None) -> bool:
    """Check the header has the text (and explicit id) column; True when it has ``id``."""
    names = header(f)
    if text_column not in names:
        raise InputError(f"{f.path}: no column {text_column!r} (columns: {columns_hint(names)})")
    if id_column is not None and id_column not in names:
        raise InputError(f"{f.path}: no id column {id_column!r} (columns: {columns_hint(names)})")
    return "id" in names


def _reader(stream: pa.NativeFile, columns: list[str], block_size: int) -> pacsv.CSVStreamingReader:
    return pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(block_size=block_size, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns,
            column_types=dict.fromkeys(columns, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _batches(f: Located, columns: list[str], skip: int) -> Generator[pa.RecordBatch, None, int]:
    """Record batches after the first ``skip`` rows; returns how many rows the file holds."""
    block_size = BLOCK_SIZE
    done = skip  # rows skipped or yielded so far
    while True:
        seen = 0
        try:
            with open_stream(f) as stream:
                for batch in _reader(stream, columns, block_size):
                    n = batch.num_rows
                    seen += n
                    if seen <= done:
                        continue
                    if seen - n < done:
                        batch = batch.slice(done - (seen - n))
                    done = seen
                    yield batch
            return seen
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or block_size >= MAX_BLOCK_SIZE:
                raise
            block_size *= BLOCK_GROWTH


def count_rows(f: Located, *, column: str, stop_after: int | None = None) -> int:
    """The number of rows (parses the file, converting one column; stops early once past ``stop_after``)."""
    rows = 0
    for batch in _batches(f, [column], 0):
        rows += batch.num_rows
        if stop_after is not None and rows > stop_after:
            break
    return rows


def chunks(f: Located, *, text_column: str, id_column: str | None, skip: int = 0) -> Generator[Chunk, None, int]:
    """Rows after the first ``skip``; returns how many rows the file holds."""
    columns = list(dict.fromkeys([text_column] + ([id_column] if id_column else [])))
    batches = _batches(f, columns, skip)
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration as stop:
                return stop.value
            texts = batch.column(text_column).to_pylist()
            ids = batch.column(id_column).to_pylist() if id_column else None
            yield Chunk(ids, texts, None)
    finally:
        batches.close()
