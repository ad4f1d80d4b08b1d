"""CSV inputs (optionally compressed), streamed by pyarrow's CSV reader, needed columns only, as strings.

Every cell is text: an empty cell is ``""``, never null, and "NA" or "null" stay as written.

An unterminated quote makes the parser merge the rows after it into one field. Two checks keep
that from passing silently: a file that ends inside a quoted field is an InputError naming the
line the field starts on (a marker row appended to the stream comes back only when the file ended
between rows), and a text or id spanning more than ``MAX_FIELD_LINES`` lines or ``MAX_FIELD_BYTES``
bytes rejects its row as an input error naming the line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Generator, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.readers.base import Chunk, InputError, columns_hint
from pipeline.readers.located import Located, open_stream

#: bytes parsed per step. A row longer than that is read by starting the file again with blocks
#: ``BLOCK_GROWTH`` times bigger (up to ``MAX_BLOCK_SIZE``), skipping the rows already read.
BLOCK_SIZE = 1 << 20
BLOCK_GROWTH = 8
MAX_BLOCK_SIZE = 512 << 20
_HEADER_LIMIT = 1 << 20
#: a value longer than this is not a text but rows merged by an unterminated quote.
MAX_FIELD_LINES = 1000
MAX_FIELD_BYTES = 64 << 20
#: every field of the marker row appended after the file's last byte.
_END = "\x1fend-of-file\x1f"


class _Unclosed(Exception):
    """The file ended inside a quoted field; ``row`` is the 0-based index of the row it belongs to."""

    def __init__(self, row: int) -> None:
        super().__init__(row)
        self.row = row


class _Appended(io.RawIOBase):
    """A byte stream followed by ``tail``."""

    def __init__(self, stream: pa.NativeFile, tail: bytes) -> None:
        self._stream = stream
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        if not data:
            data, self._tail = self._tail[: len(buffer)], self._tail[len(buffer) :]
        buffer[: len(data)] = data
        return len(data)


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


def _reader(stream: pa.NativeFile, columns: list[str], block_size: int, width: int) -> pacsv.CSVStreamingReader:
    marker = ("\n" + ",".join([_END] * max(1, width)) + "\n").encode()
    return pacsv.open_csv(
        _Appended(stream, marker),
        read_options=pacsv.ReadOptions(block_size=block_size, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns,
            column_types=dict.fromkeys(columns, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _complete(reader: pacsv.CSVStreamingReader, column: str) -> Iterator[pa.RecordBatch]:
    """The reader's batches without the marker row; raises `_Unclosed` when the marker did not come back."""
    held: pa.RecordBatch | None = None
    rows = 0
    for batch in reader:
        if batch.num_rows == 0:
            continue
        if held is not None:
            rows += held.num_rows
            yield held
        held = batch
    if held is None or held.column(column)[-1].as_py() != _END:
        raise _Unclosed(rows + (held.num_rows if held is not None else 1) - 1)
    if held.num_rows > 1:
        yield held.slice(0, held.num_rows - 1)


def _batches(f: Located, columns: list[str], skip: int) -> Generator[pa.RecordBatch, None, int]:
    """Record batches after the first ``skip`` rows; returns how many rows the file holds."""
    block_size = BLOCK_SIZE
    done = skip  # rows skipped or yielded so far
    width = len(header(f))
    while True:
        seen = 0
        try:
            with open_stream(f) as stream:
                for batch in _complete(_reader(stream, columns, block_size, width), columns[0]):
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
        except _Unclosed as exc:
            raise InputError(f"{f.path} line {line_of_row(f, exc.row)}: a quoted field is not closed before "
                             "the end of the file (an unterminated quote merges the rows after it)") from None


def line_of_row(f: Located, row: int) -> int:
    """The line (from 1) the data row of 0-based index ``row`` starts on. Reads the file again: for errors only."""
    with open_stream(f) as stream:
        text = io.TextIOWrapper(io.BufferedReader(_Appended(stream, b"")), encoding="utf-8-sig",
                                errors="replace", newline="")
        reader = csv.reader(text)
        rows = -1  # the header is row -1
        start = 1
        try:
            for record in reader:
                if record:  # a blank line is not a row
                    if rows == row:
                        return start
                    rows += 1
                start = reader.line_num + 1
        except csv.Error:
            pass
    return start


def _too_long(f: Located, batch: pa.RecordBatch, columns: list[str], first_row: int) -> list[str | None] | None:
    """Per row, None or why its text or id is taken for merged rows; None when every row is fine."""
    errors: list[str | None] | None = None
    for name in columns:
        column = batch.column(name)
        n_bytes = pc.binary_length(column)
        if (pc.max(n_bytes).as_py() or 0) <= MAX_FIELD_LINES:
            continue  # spanning more than MAX_FIELD_LINES lines takes at least that many bytes
        long = pc.indices_nonzero(pc.greater(n_bytes, MAX_FIELD_LINES))
        lines = pc.add(pc.count_substring(column.take(long), "\n"), 1)
        sizes = n_bytes.take(long)
        bad = pc.or_(pc.greater(lines, MAX_FIELD_LINES), pc.greater(sizes, MAX_FIELD_BYTES))
        for j in pc.indices_nonzero(bad).to_pylist():
            i = long[j].as_py()
            if errors is None:
                errors = [None] * batch.num_rows
            errors[i] = errors[i] or (
                f"{f.path} line {line_of_row(f, first_row + i)}: a field spans {lines[j].as_py():,} lines and "
                f"{sizes[j].as_py():,} bytes: an unterminated quote? (the rows it holds are not read)")
    return errors


def count_rows(f: Located, *, column: str, stop_after: int | None = None) -> int:
    """The number of rows (parses the file, converting one column; stops early once past ``stop_after``)."""
    rows = 0
    for batch in _batches(f, [column], 0):
        rows += batch.num_rows
        if stop_after is not None and rows > stop_after:
            break
    return rows


def chunks(f: Located, *, text_column: str, id_column: str | None, skip: int = 0,
           keep: Sequence[str] = ()) -> Generator[Chunk, None, int]:
    """Rows after the first ``skip``; returns how many rows the file holds."""
    columns = list(dict.fromkeys([text_column] + ([id_column] if id_column else []) + list(keep)))
    batches = _batches(f, columns, skip)
    row = skip
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration as stop:
                return stop.value
            texts = batch.column(text_column).to_pylist()
            ids = batch.column(id_column).to_pylist() if id_column else None
            errors = _too_long(f, batch, columns, row)
            if errors is not None:
                texts = [None if e is not None else t for t, e in zip(texts, errors, strict=True)]
            row += batch.num_rows
            extra = {c: batch.column(c).to_pylist() for c in keep} if keep else None
            yield Chunk(ids, texts, errors, extra)
    finally:
        batches.close()
