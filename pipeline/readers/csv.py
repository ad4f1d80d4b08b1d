"""CSV inputs (optionally compressed), streamed by pyarrow's CSV reader, needed columns only, as strings.

Every cell is text: an empty cell is ``""``, never null, and "NA" or "null" stay as written.
"""

from __future__ import annotations

import csv
from collections.abc import Generator

import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.readers.base import Chunk, InputError, columns_hint, one_line
from pipeline.readers.paths import Located, open_stream

#: bytes parsed per step; one row (a long text) must fit in it.
BLOCK_SIZE = 8 << 20
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


def _reader(f: Located, stream: pa.NativeFile, columns: list[str]) -> pacsv.CSVStreamingReader:
    try:
        return pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=BLOCK_SIZE),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types=dict.fromkeys(columns, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{f.path}: not a readable CSV file ({one_line(exc)})") from None


def count_rows(f: Located, *, column: str, stop_after: int | None = None) -> int:
    """The number of rows (parses the file, converting one column; stops early once past ``stop_after``)."""
    rows = 0
    with open_stream(f) as stream:
        for batch in _reader(f, stream, [column]):
            rows += batch.num_rows
            if stop_after is not None and rows > stop_after:
                break
    return rows


def chunks(f: Located, *, text_column: str, id_column: str | None, skip: int = 0) -> Generator[Chunk, None, int]:
    """Rows after the first ``skip``; returns how many rows the file holds."""
    columns = list(dict.fromkeys([text_column] + ([id_column] if id_column else [])))
    row = 0
    with open_stream(f) as stream:
        for batch in _reader(f, stream, columns):
            n = batch.num_rows
            row += n
            if row <= skip:
                continue
            if row - n < skip:
                batch = batch.slice(skip - (row - n))
            texts = batch.column(text_column).to_pylist()
            ids = batch.column(id_column).to_pylist() if id_column else None
            yield Chunk(ids, texts, None)
    return row
