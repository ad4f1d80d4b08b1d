"""The reader's small data model: input errors, row batches, input files, value conversion."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from pipeline.core.errors import UserError


class InputError(UserError):
    """A one-line, user-facing message naming the file (and line or column). Shown without traceback."""


@dataclass(slots=True)
class RowBatch:
    """Consecutive rows of one input file.

    ``errors`` is None when every row of the batch was read; otherwise it holds, per row, None or a
    one-line reason such as ``data/x.jsonl line 17: not valid JSON`` (that row's text is None).
    """

    ids: list[str]
    texts: list[str | None]
    errors: list[str | None] | None
    source: str
    #: the kept columns' values (``--keep-columns``), one list per column in `InputSet.kept_fields` order
    kept: list[list[Any]] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(slots=True, frozen=True)
class InputFile:
    """One input file: a local path or a URI, with its size and modification time when known."""

    path: str
    size: int | None
    mtime: float | None


class Chunk(NamedTuple):
    """Rows as a format reader yields them: ids may be None (no id column) or hold None (no id)."""

    ids: list[Any] | None
    texts: list[str | None]
    errors: list[str | None] | None
    #: kept columns read from the file, by name (None when none are kept)
    extra: dict[str, list[Any]] | None = None


#: what a format reader's ``chunks`` generator yields; it returns the rows it went through.
Chunks = Iterator[Chunk]


def to_text(value: Any) -> str | None:
    """A cell as text: strings unchanged, None as None, numbers with str(), the rest as JSON."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return str(value)
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def to_texts(values: list[Any]) -> list[str | None]:
    """``to_text`` over a list, without a copy when every value is already a string or None."""
    for value in values:
        if value is not None and type(value) is not str:
            return [to_text(v) for v in values]
    return values


def one_line(error: BaseException | str, *, limit: int = 300) -> str:
    """An exception's message on one line, shortened to ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def columns_hint(names: list[str], *, limit: int = 20) -> str:
    """``a, b, c`` (at most ``limit`` names) for messages about missing columns."""
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")
