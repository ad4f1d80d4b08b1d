"""Input files on this machine's disk: a file, a folder walked recursively, or a glob expanded.

Hidden and bookkeeping entries are skipped, and so is an output folder of this program found
inside an input folder or glob (it has our manifest): last night's labels are not tonight's input.
"""

from __future__ import annotations

import glob
import os

from pipeline.output.outdir import is_output_folder
from pipeline.readers.base import InputError, one_line
from pipeline.readers.located import SUPPORTED, WILDCARD, Found, Located, file_format, glob_base, hidden, unsupported


def find_local(arg: str) -> Found:
    path = os.path.expanduser(arg)
    if WILDCARD.search(path):
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise InputError(f"{arg}: no files match this pattern")
        base = os.path.abspath(glob_base(path, os.sep))
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
        return Found(files, "", base)
    if os.path.isdir(path):
        files = _walk_local(path)
        if not files:
            raise InputError(f"{arg}: folder has no supported input files (supported: {SUPPORTED})")
        return Found(files, "", os.path.abspath(path))
    if not os.path.exists(path):
        raise InputError(f"{arg}: no such file or folder")
    if file_format(path) is None:
        raise unsupported(arg)
    return Found([_local_file(path)], "", os.path.dirname(os.path.abspath(path)))


def _walk_local(folder: str) -> list[Located]:
    files = []
    seen: set[str] = set()  # real folders already walked: symbolic links may loop
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not hidden([d]) and not _local_output(os.path.join(dirpath, d)))
        for filename in sorted(filenames):
            if not hidden([filename]) and file_format(filename) is not None:
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
