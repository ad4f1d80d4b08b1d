"""CSV inputs (optionally compressed), streamed by pyarrow's CSV reader, needed columns only, as strings.

Every cell is text: an empty cell is ``""``, never null, and "NA" or "null" stay as written. A row with
a cell that is not UTF-8 is still a row: its text is None and its error names the file and line
(``input_error``), as a bad line of JSON Lines.

An unterminated quote makes the parser merge the rows after it into one field. Two checks keep
that from passing silently: a file that ends inside a quoted field is an InputError naming the
line the field starts on (a marker row appended to the stream comes back only when the file ended
between rows), and a text or id spanning more than ``MAX_FIELD_LINES`` lines or ``MAX_FIELD_BYTES``
bytes rejects its row as an input error naming the line.
"""

from __future__ import annotations

import csv
import io
import threading
import weakref
from collections.abc import Generator, Iterator, Sequence
from typing import Any

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
_END_BYTES = _END.encode()
#: how long closing a reader waits for Arrow's read-ahead thread to let go of the file.
RELEASE_SECONDS = 10.0


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


class _Block(bytearray):
    """Bytes handed to Arrow, weakly referenced to know when Arrow has let go of them."""

    __slots__ = ("__weakref__",)


class _Lent:
    """Counts the Python objects Arrow's threads hold: the stream and every block read from it."""

    def __init__(self) -> None:
        self._held = 0
        self._changed = threading.Condition()

    def lend(self, thing: object) -> None:
        with self._changed:
            self._held += 1
        weakref.finalize(thing, self._returned)

    def _returned(self) -> None:
        with self._changed:
            self._held -= 1
            self._changed.notify_all()

    def wait(self, timeout: float) -> bool:
        """True once Arrow holds none of them (False after ``timeout`` seconds)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._held == 0, timeout)


class _Source(_Appended):
    """What Arrow reads: the stream with the marker row appended, as tracked blocks; ends at once when stopped."""

    def __init__(self, stream: pa.NativeFile, tail: bytes, lent: _Lent) -> None:
        super().__init__(stream, tail)
        self._lent = lent
        self.stopped = False

    def read(self, size: int = -1) -> bytes:
        block = _Block(size if size >= 0 else BLOCK_SIZE)
        n = 0 if self.stopped else self.readinto(memoryview(block))
        del block[n:]
        self._lent.lend(block)
        return block  # type: ignore[return-value]  # a bytes-like object is what Arrow needs


class _Reader:
    """Arrow's streaming CSV reader over a stream (with the end marker row appended), closed on every path.

    Arrow reads the stream ahead on threads of its own, and every block it holds is a Python object it
    frees by taking the GIL. A reader left to the garbage collector (an error's traceback holds it) can
    still hold some when the interpreter shuts down; a thread asking for the GIL then is ended mid-call
    and the process aborts ("terminate called without an active exception", exit 134). `close` ends
    the stream for Arrow and waits until Arrow has let go of the stream and of every block.
    """

    def __init__(self, stream: pa.NativeFile, columns: list[str], block_size: int, width: int) -> None:
        marker = ("\n" + ",".join([_END] * max(1, width)) + "\n").encode()
        self._lent = _Lent()
        self._source: _Source | None = _Source(stream, marker, self._lent)
        self._lent.lend(self._source)
        self._reader: pacsv.CSVStreamingReader | None = None
        try:
            self._reader = pacsv.open_csv(
                self._source,
                read_options=pacsv.ReadOptions(block_size=block_size, use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    include_columns=columns,
                    # bytes, not strings: a cell that is not UTF-8 rejects its row, not the file
                    column_types=dict.fromkeys(columns, pa.binary()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while self._reader is not None:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                return
            yield batch

    def close(self) -> None:
        """Stop Arrow's reading and wait (a bounded time) until no Arrow thread holds a Python object of ours."""
        if self._source is not None:
            self._source.stopped = True
        self._source = None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
            del reader
        self._lent.wait(RELEASE_SECONDS)


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


def _complete(reader: _Reader, column: str) -> Iterator[pa.RecordBatch]:
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
    if held is None or held.column(column)[-1].as_py() != _END_BYTES:
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
                reader = _Reader(stream, columns, block_size, width)
                try:
                    for batch in _complete(reader, columns[0]):
                        n = batch.num_rows
                        seen += n
                        if seen <= done:
                            continue
                        if seen - n < done:
                            batch = batch.slice(done - (seen - n))
                        done = seen
                        yield batch
                finally:
                    reader.close()
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
    with _Lines(f) as lines:
        return lines.of_row(row)


class _Lines:
    """The lines data rows start on, found by reading the file again once, forward: for errors only."""

    def __init__(self, f: Located) -> None:
        self._f = f
        self._stream: pa.NativeFile | None = None
        self._records: Iterator[list[str]] | None = None
        self._reader: Any = None
        self._rows = -1  # index of the next row the reader gives (the header is row -1)
        self._start = 1  # the line it starts on

    def of_row(self, row: int) -> int:
        """The line data row ``row`` starts on; rows are asked in increasing order."""
        if self._records is None or row < self._rows:
            self._open()
        assert self._records is not None
        try:
            for record in self._records:
                start, self._start = self._start, self._reader.line_num + 1
                if record:  # a blank line is not a row
                    self._rows += 1
                    if self._rows - 1 == row:
                        return start
        except csv.Error:
            pass
        return self._start

    def _open(self) -> None:
        self.close()
        self._stream = open_stream(self._f)
        text = io.TextIOWrapper(io.BufferedReader(_Appended(self._stream, b"")), encoding="utf-8-sig",
                                errors="replace", newline="")
        self._reader = csv.reader(text)
        self._records = iter(self._reader)
        self._rows, self._start = -1, 1

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = self._records = self._reader = None

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_text(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, dict[int, str]]:
    """The batch's byte columns as strings, and why rows holding bytes that are not UTF-8 are rejected.

    Such a cell is decoded with U+FFFD for its bad bytes; its row (index in the batch) is rejected.
    """
    arrays: list[pa.Array] = []
    problems: dict[int, str] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            arrays.append(column.cast(pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        values: list[str] = []
        for i, raw in enumerate(column.to_pylist()):
            try:
                values.append(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                values.append(raw.decode("utf-8", errors="replace"))
                problems.setdefault(i, f"column {name!r} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                       f"position {exc.start + 1}); is the file in another encoding?")
        arrays.append(pa.array(values, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names), problems


def _too_long(batch: pa.RecordBatch, columns: list[str]) -> dict[int, str]:
    """Why rows (by index in the batch) whose text or id is taken for merged rows are rejected."""
    problems: dict[int, str] = {}
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
            problems.setdefault(long[j].as_py(), (
                f"a field spans {lines[j].as_py():,} lines and {sizes[j].as_py():,} bytes: an unterminated "
                "quote? (the rows it holds are not read)"))
    return problems


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
    """Rows after the first ``skip``; returns how many rows the file holds.

    A row whose text, id or kept cell is not UTF-8, or whose text or id spans implausibly many lines, is
    still a row: its text is None and its error names the file and line (``input_error``), as a bad line
    of JSON Lines.
    """
    columns = list(dict.fromkeys([text_column] + ([id_column] if id_column else []) + list(keep)))
    batches = _batches(f, columns, skip)
    row = skip
    with _Lines(f) as lines:
        try:
            while True:
                try:
                    batch = next(batches)
                except StopIteration as stop:
                    return stop.value
                batch, problems = _as_text(batch)
                for i, problem in _too_long(batch, columns).items():
                    problems.setdefault(i, problem)
                texts = batch.column(text_column).to_pylist()
                ids = batch.column(id_column).to_pylist() if id_column else None
                errors: list[str | None] | None = None
                if problems:
                    errors = [None] * batch.num_rows
                    for i in sorted(problems):
                        errors[i] = f"{f.path} line {lines.of_row(row + i)}: {problems[i]}"
                        texts[i] = None
                row += batch.num_rows
                extra = {c: batch.column(c).to_pylist() for c in keep} if keep else None
                yield Chunk(ids, texts, errors, extra)
        finally:
            batches.close()
