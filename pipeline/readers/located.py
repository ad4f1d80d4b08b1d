"""An input file found on disk or in an object store: its format, how to open it, and the rules that
every way of finding inputs shares (wildcards, hidden entries, supported names)."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.readers.base import InputError

#: the formats a file name may end with, before an optional compression suffix.
FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
#: compression suffixes accepted after the text formats (JSONL, CSV), as pyarrow codec names.
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
SUPPORTED = ".parquet, .jsonl, .ndjson, .csv (the last three also .gz, .zst or .bz2)"

#: a path holding one of these is a glob pattern.
WILDCARD = re.compile(r"[*?[]")


@dataclass(slots=True)
class Located:
    """An input file found on disk or in an object store, before its contents are checked."""

    path: str  # as the user gave it, or as a folder or glob expanded it
    fs: pafs.FileSystem | None  # None: a local file read with the default local filesystem
    fs_path: str  # the path to open (on ``fs`` when set)
    scheme: str  # "" for local files, else the URI scheme ("s3", "gs", "file", ...)
    key: str  # absolute path or full URI: the sort and identity key
    size: int | None
    mtime: float | None
    format: str  # parquet | jsonl | csv
    compression: str | None
    name: str = ""  # relative to the common root of the inputs (for synthetic ids)


@dataclass(slots=True)
class Found:
    """The files one input argument expanded to."""

    files: list[Located]
    scheme: str
    root: str  # the folder the synthetic names are relative to


def file_format(name: str) -> tuple[str, str | None] | None:
    """``(format, compression)`` for a file name, or None when its type is not supported."""
    lower = name.lower()
    base, ext = posixpath.splitext(lower)
    compression = COMPRESSIONS.get(ext)
    if compression is not None:
        base, ext = posixpath.splitext(base)
    fmt = FORMATS.get(ext)
    if fmt is None or (fmt == "parquet" and compression is not None):
        return None
    return fmt, compression


def unsupported(path: str) -> InputError:
    return InputError(f"{path}: unsupported file type (supported: {SUPPORTED})")


def hidden(rel_parts: list[str]) -> bool:
    """Hidden or bookkeeping entries (``.cache``, ``_SUCCESS``, ``_temporary``) are not inputs."""
    return any(part.startswith((".", "_")) for part in rel_parts)


def glob_base(pattern: str, sep: str) -> str:
    """The folder part of a glob before its first wildcard (``data/2024-*/x`` → ``data``)."""
    fixed = []
    for part in pattern.split(sep)[:-1]:
        if WILDCARD.search(part):
            break
        fixed.append(part)
    if not fixed:
        return "." if sep == os.sep else ""
    return sep.join(fixed) or sep


def open_stream(f: Located) -> pa.NativeFile:
    """A sequential, decompressed byte stream over a text-format input file."""
    if f.fs is None:
        return pa.input_stream(f.fs_path, compression=f.compression)
    return f.fs.open_input_stream(f.fs_path, compression=f.compression)


def open_random_access(f: Located) -> pa.NativeFile | str:
    """What ``pyarrow.parquet.ParquetFile`` opens: the local path, or a seekable remote file."""
    return f.fs_path if f.fs is None else f.fs.open_input_file(f.fs_path)
