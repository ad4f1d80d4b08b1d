"""Files a user names for output (``--output``, ``--review-output``, ``-o``): written without harming anything else.

The same rules for every command that writes one:

- a regular file, or a name not yet taken, is written under a unique hidden name beside it and
  renamed over it only when complete; the hidden file is removed when writing fails;
- a symbolic link is followed: its target is written that way and the link stays a link;
- a device, a FIFO or a stream (``/dev/null``, ``/dev/stdout``) is written straight through and never
  replaced; a command whose output may be split into several files refuses them (``regular_only``);
- a directory, or a folder that does not exist, is refused (a folder is created only inside the
  command's own output directory, ``create_within``).

Every refusal and every failed write is an `OutputFileError`: one line naming the flag and the path.
`temp_name` gives the unique hidden names, also to the files of an output directory.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.core.errors import UserError

__all__ = ["OutputFileError", "is_stream", "open_output", "output_target", "temp_name", "writing"]


class OutputFileError(UserError):
    """An output file that cannot be written as asked (one line: flag, path, reason)."""


def temp_name(path: Path) -> Path:
    """A hidden name beside ``path`` that no other writer uses: ``.NAME.<random>.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def output_target(path: str | Path, *, flag: str, regular_only: bool = False,
                  create_within: str | Path | None = None) -> Path:
    """The path to write for a user's ``flag PATH``: links followed, refusals as `OutputFileError`."""
    path = Path(path)
    where = f"{flag} {path}"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputFileError(f"{where}: cannot use it ({exc.strerror})") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputFileError(f"{where}: is a directory; name a file")
    if is_stream(path):
        if regular_only:
            raise OutputFileError(f"{where}: not a regular file (a device, FIFO or stream); name a file")
        return path  # /dev/stdout resolves to a pipe that has no name: it is opened as named
    target = Path(os.path.realpath(path))
    _check_folder(target.parent, where=where, create_within=create_within)
    return target


def is_stream(path: Path) -> bool:
    """Whether ``path`` is written straight through: a device, FIFO or socket, or anything under /dev or
    /proc (``/dev/stdout`` redirected to a file is the shell's file: it is appended to, never replaced)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) or any(str(p).startswith(("/dev/", "/proc/"))
                                         for p in (path.absolute(), os.path.realpath(path)))


def _check_folder(folder: Path, *, where: str, create_within: str | Path | None) -> None:
    if folder.is_dir():
        return
    if folder.exists():
        raise OutputFileError(f"{where}: {folder} is not a folder")
    if create_within is not None and folder.is_relative_to(os.path.realpath(create_within)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputFileError(f"{where}: cannot create folder {folder} ({exc.strerror})") from None
        return
    raise OutputFileError(f"{where}: folder {folder} does not exist; create it first")


@contextlib.contextmanager
def open_output(path: str | Path, *, flag: str) -> Iterator[BinaryIO]:
    """Write the file a user named with ``flag``; it appears whole when the block ends without error.

    >>> with open_output("train.jsonl", flag="--output") as handle:  # doctest: +SKIP
    ...     handle.write(b"{}\\n")
    """
    target = output_target(path, flag=flag)
    where = f"{flag} {path}"
    if is_stream(target):
        with writing(where):
            stream = open(target, "ab")  # noqa: SIM115 - appending truncates nothing the shell opened
        with _closing(stream, where):
            yield _Sink(stream, where)  # type: ignore[misc]
        return
    temp = temp_name(target)
    with writing(where):
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with _closing(os.fdopen(fd, "wb"), where) as handle:
            yield _Sink(handle, where)  # type: ignore[misc]
            with writing(where):
                handle.flush()
                os.fsync(handle.fileno())
        with writing(where):
            _keep_mode(target, temp)
            os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):  # a read-only folder may refuse even this
            temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _closing(handle: BinaryIO, where: str) -> Iterator[BinaryIO]:
    """Close ``handle`` after the block; when the block failed, its error is the one reported (an error
    of the block itself, such as an unreadable input, is never taken for a failed write)."""
    try:
        yield handle
    except BaseException:
        with contextlib.suppress(OSError):
            handle.close()
        raise
    with writing(where):
        handle.close()


def _keep_mode(target: Path, temp: Path) -> None:
    """A file written again keeps its permissions (a new one gets the umask's)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(temp, stat.S_IMODE(target.stat().st_mode))


@contextlib.contextmanager
def writing(where: str) -> Iterator[None]:
    """OSErrors of the block as `OutputFileError` naming ``where`` (``"--output PATH"``)."""
    try:
        yield
    except OSError as exc:
        raise OutputFileError(f"{where}: cannot write ({exc.strerror or exc})") from None


class _Sink:
    """A binary file whose failed writes are `OutputFileError` (a full disk names the flag and path)."""

    def __init__(self, handle: BinaryIO, where: str) -> None:
        self._handle, self._where = handle, where
        self.closed = False

    def write(self, data: bytes) -> int:
        with writing(self._where):
            return self._handle.write(data)

    def flush(self) -> None:
        with writing(self._where):
            self._handle.flush()

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:  # the block that opened it closes the file
        self.closed = True
