"""Errors of the output directory: it cannot be used as asked, or another run holds it."""

from __future__ import annotations

from pipeline.core.errors import OutputLockedError, UserError

__all__ = ["OutputDirError", "OutputDirLocked"]


class OutputDirError(UserError):
    """The output directory cannot be used as asked (one line, names the directory)."""

    def __init__(self, message: str, *, locked: bool = False) -> None:
        super().__init__(message)
        #: another live run holds the directory
        self.locked = locked


class OutputDirLocked(OutputDirError, OutputLockedError):
    """Another live run holds the output directory (exit 5)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, locked=True)
