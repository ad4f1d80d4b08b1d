"""Input files named by URI: object stores (s3://, gs://, abfs://) and file://, through pyarrow filesystems.

A URI names a file, a folder (listed recursively) or a glob (``**`` crosses folders, ``*`` does not).
Hidden entries and output folders of this program inside the listing are not inputs.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

import pyarrow.fs as pafs

from pipeline.core.storage import StorageError, bounded, filesystem
from pipeline.output.outdir import is_output_folder
from pipeline.readers.base import InputError, one_line
from pipeline.readers.located import SUPPORTED, WILDCARD, Found, Located, file_format, glob_base, hidden, unsupported


def find_uri(arg: str) -> Found:
    scheme = arg.split("://", 1)[0].lower()
    try:
        fs, fs_path = filesystem(arg)
    except StorageError as exc:
        raise InputError(str(exc)) from None
    # the first call is bounded from outside (credential chains may probe the network); the rest
    # run under the filesystem's own timeouts, so a long listing of a big bucket is not cut short
    first = glob_base(fs_path, "/") if WILDCARD.search(fs_path) else fs_path
    try:
        bounded(arg, lambda: fs.get_file_info(first))
    except StorageError as exc:
        raise InputError(str(exc)) from None
    except Exception as exc:  # network, permissions, credentials: report, don't trace back
        raise InputError(f"{arg}: cannot list this location ({one_line(exc)})") from None
    return _find_on(fs, fs_path, arg, scheme)


def _find_on(fs: pafs.FileSystem, fs_path: str, arg: str, scheme: str) -> Found:
    try:
        if WILDCARD.search(fs_path):
            base = glob_base(fs_path, "/")
            pattern = _glob_regex(fs_path)
            infos = _list(fs, base)
            files = [
                _remote_file(fs, scheme, info)
                for info in infos
                if pattern.fullmatch(info.path) and file_format(info.path) is not None
            ]
            if not files:
                raise InputError(f"{arg}: no supported input files match this pattern (supported: {SUPPORTED})")
            return Found(files, scheme, base)
        info = fs.get_file_info(fs_path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"{arg}: no such file or folder")
        if info.type == pafs.FileType.Directory:
            files = [
                _remote_file(fs, scheme, child)
                for child in _list(fs, fs_path)
                if file_format(child.path) is not None
                and not hidden(posixpath.relpath(child.path, fs_path).split("/"))
            ]
            if not files:
                raise InputError(f"{arg}: folder has no supported input files (supported: {SUPPORTED})")
            return Found(files, scheme, fs_path.rstrip("/") or "/")
        if file_format(fs_path) is None:
            raise unsupported(arg)
        return Found([_remote_file(fs, scheme, info)], scheme, posixpath.dirname(fs_path))
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
