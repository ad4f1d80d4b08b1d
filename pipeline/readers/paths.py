"""Turn the user's input arguments (files, folders, globs, URIs) into a sorted list of input files."""

from __future__ import annotations

import glob
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.outdir import is_output_folder
from pipeline.readers.base import InputError, one_line
from pipeline.storage import StorageError, bounded, filesystem, is_uri

#: the formats a file name may end with, before an optional compression suffix.
FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
#: compression suffixes accepted after the text formats (JSONL, CSV), as pyarrow codec names.
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
SUPPORTED = ".parquet, .jsonl, .ndjson, .csv (the last three also .gz, .zst or .bz2)"

_MAGIC = re.compile(r"[*?[]")


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
class _Found:
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


def locate(paths: list[str]) -> list[Located]:
    """Expand files, folders (recursively) and globs into input files sorted by path.

    Each file is named relative to the common root of the inputs (``Located.name``). Raises
    InputError for a missing path, a glob matching nothing, a folder without supported inputs and an
    unsupported file type.
    """
    if not paths:
        raise InputError("no input given")
    found = [(_find_uri if is_uri(p) else _find_local)(p) for p in paths]
    files: dict[str, Located] = {}
    for group in found:
        for f in group.files:
            ident = os.path.realpath(f.fs_path) if f.fs is None else f.key
            files.setdefault(ident, f)
    ordered = sorted(files.values(), key=lambda f: f.key)
    _name_files(ordered, found)
    return ordered


def _name_files(files: list[Located], found: list[_Found]) -> None:
    schemes = {g.scheme for g in found}
    root: str | None = None
    if len(schemes) == 1:
        pathmod = posixpath if schemes != {""} else os.path
        try:
            root = pathmod.commonpath([g.root for g in found])
        except ValueError:
            root = None
    for f in files:
        if root is None:
            f.name = f.key
        elif f.fs is None:
            f.name = os.path.relpath(f.key, root).replace(os.sep, "/")
        else:
            f.name = posixpath.relpath(f.fs_path, root) if root else f.fs_path.lstrip("/")


def _unsupported(path: str) -> InputError:
    return InputError(f"{path}: unsupported file type (supported: {SUPPORTED})")


def _hidden(rel_parts: list[str]) -> bool:
    """Hidden or bookkeeping entries (``.cache``, ``_SUCCESS``, ``_temporary``) are not inputs."""
    return any(part.startswith((".", "_")) for part in rel_parts)


# -- local files ------------------------------------------------------------------------------------


def _find_local(arg: str) -> _Found:
    path = os.path.expanduser(arg)
    if _MAGIC.search(path):
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise InputError(f"{arg}: no files match this pattern")
        base = os.path.abspath(_glob_base(path, os.sep))
        files: list[Located] = []
        outputs: dict[str, bool] = {}
        for match in matches:
            if _inside_output(os.path.abspath(match), base, outputs):
                continue
            if os.path.isdir(match):
                files.extend(_walk_local(match))
            elif file_format(match) is not None:
                files.append(_local_file(match))
        if not files:
            raise InputError(f"{arg}: no supported input files match this pattern (supported: {SUPPORTED})")
        return _Found(files, "", base)
    if os.path.isdir(path):
        files = _walk_local(path)
        if not files:
            raise InputError(f"{arg}: folder has no supported input files (supported: {SUPPORTED})")
        return _Found(files, "", os.path.abspath(path))
    if not os.path.exists(path):
        raise InputError(f"{arg}: no such file or folder")
    if file_format(path) is None:
        raise _unsupported(arg)
    return _Found([_local_file(path)], "", os.path.dirname(os.path.abspath(path)))


def _walk_local(folder: str) -> list[Located]:
    files = []
    seen: set[str] = set()  # real folders already walked: symbolic links may loop
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _hidden([d]) and not _local_output(os.path.join(dirpath, d)))
        for filename in sorted(filenames):
            if not _hidden([filename]) and file_format(filename) is not None:
                files.append(_local_file(os.path.join(dirpath, filename)))
    return files


def _inside_output(path: str, base: str, seen: dict[str, bool]) -> bool:
    """Whether a glob match is, or lies in, an output folder below the glob's fixed part."""
    folder = path
    while folder.startswith(base) and len(folder) > len(base):
        if folder not in seen:
            seen[folder] = _local_output(folder)
        if seen[folder]:
            return True
        folder = os.path.dirname(folder)
    return False


def _local_output(folder: str) -> bool:
    """An output folder of this program (it has our manifest) inside an input folder is not input."""
    try:
        with open(os.path.join(folder, "manifest.json"), "rb") as handle:
            return is_output_folder(handle.read(1 << 20))
    except OSError:
        return False


def _local_file(path: str) -> Located:
    fmt, compression = file_format(path) or ("", None)
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({one_line(exc.strerror or exc)})") from None
    return Located(
        path=path,
        fs=None,
        fs_path=path,
        scheme="",
        key=os.path.abspath(path),
        size=stat.st_size,
        mtime=stat.st_mtime,
        format=fmt,
        compression=compression,
    )


def _glob_base(pattern: str, sep: str) -> str:
    """The folder part of a glob before its first wildcard (``data/2024-*/x`` → ``data``)."""
    fixed = []
    for part in pattern.split(sep)[:-1]:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    if not fixed:
        return "." if sep == os.sep else ""
    return sep.join(fixed) or sep


# -- object stores and file:// URIs -----------------------------------------------------------------


def _find_uri(arg: str) -> _Found:
    scheme = arg.split("://", 1)[0].lower()
    try:
        fs, fs_path = filesystem(arg)
    except StorageError as exc:
        raise InputError(str(exc)) from None
    # the first call is bounded from outside (credential chains may probe the network); the rest
    # run under the filesystem's own timeouts, so a long listing of a big bucket is not cut short
    first = _glob_base(fs_path, "/") if _MAGIC.search(fs_path) else fs_path
    try:
        bounded(arg, lambda: fs.get_file_info(first))
    except StorageError as exc:
        raise InputError(str(exc)) from None
    except Exception as exc:  # network, permissions, credentials: report, don't trace back
        raise InputError(f"{arg}: cannot list this location ({one_line(exc)})") from None
    return _find_on(fs, fs_path, arg, scheme)


def _find_on(fs: pafs.FileSystem, fs_path: str, arg: str, scheme: str) -> _Found:
    try:
        if _MAGIC.search(fs_path):
            base = _glob_base(fs_path, "/")
            pattern = _glob_regex(fs_path)
            infos = _list(fs, base)
            files = [
                _remote_file(fs, scheme, info)
                for info in infos
                if pattern.fullmatch(info.path) and file_format(info.path) is not None
            ]
            if not files:
                raise InputError(f"{arg}: no supported input files match this pattern (supported: {SUPPORTED})")
            return _Found(files, scheme, base)
        info = fs.get_file_info(fs_path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"{arg}: no such file or folder")
        if info.type == pafs.FileType.Directory:
            files = [
                _remote_file(fs, scheme, child)
                for child in _list(fs, fs_path)
                if file_format(child.path) is not None
                and not _hidden(posixpath.relpath(child.path, fs_path).split("/"))
            ]
            if not files:
                raise InputError(f"{arg}: folder has no supported input files (supported: {SUPPORTED})")
            return _Found(files, scheme, fs_path.rstrip("/") or "/")
        if file_format(fs_path) is None:
            raise _unsupported(arg)
        return _Found([_remote_file(fs, scheme, info)], scheme, posixpath.dirname(fs_path))
    except InputError:
        raise
    except Exception as exc:  # network, permissions, credentials: report, don't trace back
        raise InputError(f"{arg}: cannot list this location ({one_line(exc)})") from None


def _list(fs: pafs.FileSystem, base: str) -> list[Any]:
    """Files under ``base``, without those inside an output folder of this program."""
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    infos = [i for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]
    outputs = [posixpath.dirname(i.path) + "/" for i in infos
               if posixpath.basename(i.path) == "manifest.json" and posixpath.dirname(i.path) != base.rstrip("/")
               and _remote_output(fs, i.path)]
    infos = [i for i in infos if not any(i.path.startswith(folder) for folder in outputs)]
    return sorted(infos, key=lambda i: i.path)


def _remote_output(fs: pafs.FileSystem, manifest: str) -> bool:
    try:
        with fs.open_input_stream(manifest) as stream:
            return is_output_folder(stream.read(1 << 20))
    except OSError:
        return False


def _remote_file(fs: pafs.FileSystem, scheme: str, info: Any) -> Located:
    fmt, compression = file_format(info.path) or ("", None)
    uri = f"{scheme}://{info.path}"
    mtime = info.mtime.timestamp() if info.mtime is not None else None
    return Located(
        path=uri,
        fs=fs,
        fs_path=info.path,
        scheme=scheme,
        key=uri,
        size=info.size,
        mtime=mtime,
        format=fmt,
        compression=compression,
    )


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex over ``/``-separated paths: ``*`` and ``?`` stay within one folder, ``**`` doesn't."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def open_stream(f: Located) -> pa.NativeFile:
    """A sequential, decompressed byte stream over a text-format input file."""
    if f.fs is None:
        return pa.input_stream(f.fs_path, compression=f.compression)
    return f.fs.open_input_stream(f.fs_path, compression=f.compression)


def open_random_access(f: Located) -> pa.NativeFile | str:
    """What ``pyarrow.parquet.ParquetFile`` opens: the local path, or a seekable remote file."""
    return f.fs_path if f.fs is None else f.fs.open_input_file(f.fs_path)
