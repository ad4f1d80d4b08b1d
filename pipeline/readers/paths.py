"""Turn the user's input arguments (files, folders, globs, URIs) into a sorted list of input files.

Local arguments are expanded by `pipeline.readers.localfiles`, URIs by `pipeline.readers.uris`;
each file found is a `pipeline.readers.located.Located`.
"""

from __future__ import annotations

import os
import posixpath

from pipeline.core.storage import is_uri
from pipeline.readers.base import InputError
from pipeline.readers.localfiles import find_local
from pipeline.readers.located import Found, Located
from pipeline.readers.uris import find_uri


def locate(paths: list[str]) -> list[Located]:
    """Expand files, folders (recursively) and globs into input files sorted by path.

    Each file is named relative to the common root of the inputs (``Located.name``). Raises
    InputError for a missing path, a glob matching nothing, a folder without supported inputs and an
    unsupported file type.
    """
    if not paths:
        raise InputError("no input given")
    found = [(find_uri if is_uri(p) else find_local)(p) for p in paths]
    files: dict[str, Located] = {}
    for group in found:
        for f in group.files:
            ident = os.path.realpath(f.fs_path) if f.fs is None else f.key
            files.setdefault(ident, f)
    ordered = sorted(files.values(), key=lambda f: f.key)
    _name_files(ordered, found)
    return ordered


def _name_files(files: list[Located], found: list[Found]) -> None:
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
