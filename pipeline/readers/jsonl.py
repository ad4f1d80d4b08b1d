"""JSON Lines inputs (``.jsonl``, ``.ndjson``, optionally compressed), read line by line with orjson.

A line that is not valid JSON, not a JSON object, or an object without the text key is still a row:
its text is None and its error names the file and line, so the pipeline records it (``input_error``)
instead of losing it. A text key that is present but null or empty is an empty text. Blank lines
are not rows.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from pipeline.readers.base import Chunk, InputError, columns_hint, to_text
from pipeline.readers.located import Located, open_stream

#: bytes read (after decompression) per step.
READ_SIZE = 1 << 20
#: lines looked at to find the first JSON object when checking the columns.
PROBE_LINES = 1000
_BOM = b"\xef\xbb\xbf"
#: orjson reads integers beyond 64 bits as floats; a float this large may have been such an integer.
_FLOAT_BEYOND = float(2**63)


def _reads(stream: Any, size: int) -> Iterator[bytes]:
    """The stream's bytes, ``size`` at a time, without a UTF-8 byte order mark at the start."""
    head = b""
    while len(head) < len(_BOM) and (piece := stream.read(size)):
        head += piece
    if head := head.removeprefix(_BOM):
        yield head
    while chunk := stream.read(size):
        yield chunk


def _lines(stream: Any) -> Iterator[list[bytes]]:
    """The stream's lines (without their ``\\n``) in order, as one list per read."""
    pending: list[bytes] = []
    for chunk in _reads(stream, READ_SIZE):
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        lines = chunk.split(b"\n")
        if pending:
            pending.append(lines[0])
            lines[0] = b"".join(pending)
        pending = [lines.pop()]
        yield lines
    tail = b"".join(pending)
    if tail:
        yield [tail]


def _open_at(f: Located, offset: int) -> pa.NativeFile:
    """The plain file from byte ``offset`` on."""
    stream = pa.OSFile(f.fs_path) if f.fs is None else f.fs.open_input_file(f.fs_path)
    stream.seek(offset)
    return stream


def probe(f: Located, *, text_column: str, id_column: str | None) -> bool:
    """Check the first JSON object has the text (and explicit id) column; True when it has ``id``."""
    return "id" in first_object(f, text_column=text_column, id_column=id_column)


def first_object(f: Located, *, text_column: str, id_column: str | None) -> dict[str, Any]:
    """The file's first JSON object, checked to have the text (and explicit id) column."""
    lineno = rows = 0
    with open_stream(f) as stream:
        for lines in _lines(stream):
            for line in lines:
                lineno += 1
                if not line or line.isspace():
                    continue
                rows += 1
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    obj = None
                if type(obj) is dict:
                    keys = columns_hint([str(k) for k in obj])
                    if text_column not in obj:
                        raise InputError(f"{f.path}: no column {text_column!r} (keys on line {lineno}: {keys})")
                    if id_column is not None and id_column not in obj:
                        raise InputError(f"{f.path}: no id column {id_column!r} (keys on line {lineno}: {keys})")
                    return obj
                if rows >= PROBE_LINES:
                    break
            if rows >= PROBE_LINES:
                break
    if rows:
        raise InputError(f"{f.path}: not JSON Lines (no JSON object in the first {rows} lines)")
    raise InputError(f"{f.path}: no rows (only blank lines)")


def count_rows(f: Located, *, stop_after: int | None = None) -> int:
    """The number of non-blank lines, fast (stops early once past ``stop_after``)."""
    rows = 0
    partial: bool | None = None  # the line the last read ended in: None (none), blank so far, or not
    with open_stream(f) as stream:
        for chunk in _reads(stream, 4 * READ_SIZE):
            first_nl = chunk.find(b"\n")
            if first_nl < 0:
                partial = partial is True or not chunk.isspace()
                continue
            head = chunk[:first_nl]
            if partial is True or (head and not head.isspace()):
                rows += 1
            last_nl = chunk.rfind(b"\n")
            if last_nl > first_nl:
                # lines between the first and the last newline: all rows when each starts with "{"
                lines = chunk.count(b"\n", first_nl, last_nl)
                if chunk.count(b"\n{", first_nl, last_nl + 1) == lines:
                    rows += lines
                else:
                    body = chunk[first_nl + 1 : last_nl].split(b"\n")
                    rows += sum(1 for line in body if line and not line.isspace())
            tail = chunk[last_nl + 1 :]
            partial = None if not tail else not tail.isspace()
            if stop_after is not None and rows > stop_after:
                break
    return rows + (partial is True)


#: a seek point: (row index in the file, byte offset where that row's line starts, lines before it)
RowStart = tuple[int, int, int]


def row_index(f: Located, *, every: int, stop_after: int | None = None) -> tuple[int, list[RowStart]]:
    """The number of rows (as `count_rows` counts them) and where every ``every``-th row starts.

    One pass at memory speed (numpy finds the newlines); a reader then seeks to a row's line
    instead of reading the file from its start. Plain files only (a compressed stream cannot seek).
    """
    marks: list[RowStart] = []
    rows = lines = 0
    carry, base = b"", 0  # the line begun in the last read, and its offset in the file
    with open_stream(f) as stream:
        first = True
        while chunk := stream.read(4 * READ_SIZE):
            if first:
                first = False
                if chunk.startswith(_BOM):
                    chunk, base = chunk[len(_BOM):], len(_BOM)
            buf = carry + chunk if carry else chunk
            newlines = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
            if len(newlines):
                starts = np.concatenate(([0], newlines[:-1] + 1))
                rows_before = rows
                rows = _mark(buf, starts, newlines, rows, lines, base, every, marks)
                lines += len(newlines)
                cut = int(newlines[-1]) + 1
                carry, base = buf[cut:], base + cut
                if stop_after is not None and rows > stop_after and rows > rows_before:
                    return rows, marks
            else:
                carry = buf
        if carry and not carry.isspace():
            if rows and rows % every == 0:
                marks.append((rows, base, lines))
            rows += 1
    return rows, marks


def _mark(buf: bytes, starts: np.ndarray, ends: np.ndarray, rows: int, lines: int, base: int, every: int,
          marks: list[RowStart]) -> int:
    """Count the rows of complete lines in ``buf`` and mark those at multiples of ``every``; the new row count."""
    lengths = ends - starts
    data = np.frombuffer(buf, np.uint8)
    row = lengths > 0
    first = data[np.minimum(starts, len(buf) - 1)]
    for i in np.flatnonzero(row & np.isin(first, _SPACE)):  # a line of spaces is blank, not a row
        if buf[starts[i]:ends[i]].isspace():
            row[i] = False
    index = rows + np.cumsum(row) - 1  # each row's index in the file
    for i in np.flatnonzero(row & (index % every == 0) & (index > 0)):
        marks.append((int(index[i]), base + int(starts[i]), lines + int(i)))
    return rows + int(row.sum())


_SPACE = np.frombuffer(b" \t\r\x0b\x0c", np.uint8)


def _exact_integers(line: bytes, obj: dict[str, Any]) -> dict[str, Any]:
    """The object read again with every integer exact, when orjson made floats of integers past 64 bits."""
    if not any(type(v) is float and abs(v) >= _FLOAT_BEYOND for v in obj.values()):
        return obj
    try:
        exact = json.loads(line)
    except ValueError:  # an integer of more than 4,300 digits: keep the float
        return obj
    return exact if type(exact) is dict else obj


def chunks(f: Located, *, text_column: str, id_column: str | None, skip: int = 0,
           keep: Sequence[str] = (), start: RowStart | None = None) -> Generator[Chunk, None, int]:
    """Rows of the file after the first ``skip``; returns how many rows the file holds.

    Kept columns (``keep``) missing from an object are None. ``start``: a seek point at or before
    row ``skip`` (from `row_index`): reading begins there rather than at the file's start.
    """
    loads = orjson.loads
    source = f.path
    row = lineno = 0
    if start is not None:
        row, offset, lineno = start
    with (open_stream(f) if start is None else _open_at(f, offset)) as stream:
        for lines in _lines(stream):
            ids: list[Any] | None = [] if id_column is not None else None
            texts: list[str | None] = []
            errors: list[str | None] | None = None
            extra: dict[str, list[Any]] | None = {c: [] for c in keep} if keep else None
            for line in lines:
                lineno += 1
                if not line or line.isspace():
                    continue
                row += 1
                if row <= skip:
                    continue
                try:
                    obj = loads(line)
                except orjson.JSONDecodeError as exc:
                    obj = exc
                if ids is not None and type(obj) is dict and type(obj.get(id_column)) is float:
                    obj = _exact_integers(line, obj)
                if type(obj) is dict and text_column in obj:
                    text = obj[text_column]
                    texts.append(text if text is None or type(text) is str else to_text(text))
                    if ids is not None:
                        ids.append(obj.get(id_column))
                    if errors is not None:
                        errors.append(None)
                    if extra is not None:
                        for c, values in extra.items():
                            values.append(obj.get(c))
                    continue
                if errors is None:
                    errors = [None] * len(texts)
                if isinstance(obj, orjson.JSONDecodeError):
                    errors.append(f"{source} line {lineno}: not valid JSON ({obj.msg}, column {obj.colno})")
                elif type(obj) is dict:
                    errors.append(f"{source} line {lineno}: no key {text_column!r}")
                else:
                    errors.append(f"{source} line {lineno}: not a JSON object")
                texts.append(None)
                if ids is not None:
                    ids.append(obj.get(id_column) if type(obj) is dict else None)
                if extra is not None:
                    for c, values in extra.items():
                        values.append(obj.get(c) if type(obj) is dict else None)
            if texts:
                yield Chunk(ids, texts, errors, extra)
    return row
