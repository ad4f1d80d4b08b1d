"""The error tree: every error the library raises on purpose, and the exit code each one means.

`ModerateError` is the base. `UserError` covers the one-line mistakes a user can make (a config, an
input, a policy, a price table, a store, an output folder): the CLI prints the message alone, without
a traceback. `EXIT_CODES` is the one table the CLI reads to turn an error into an exit code.

>>> exit_code_for(UserError("no input"))
2
>>> exit_code_for(OutputLockedError("out/x: another run is using this directory"))
5
"""

from __future__ import annotations

from pipeline.core import exitcodes

__all__ = ["EXIT_CODES", "ModerateError", "OutputLockedError", "UserError", "exit_code_for"]


class ModerateError(Exception):
    """Base of every error `pipeline` raises on purpose; the message is one line."""


class UserError(ModerateError):
    """A user's mistake found by the library: a config, an input, a policy, prices, a store, an output folder."""


class OutputLockedError(UserError):
    """Another run holds the output directory's lock."""


#: the exit code of each error class; a subclass not listed takes its nearest listed base's.
EXIT_CODES: dict[type[BaseException], int] = {
    ModerateError: exitcodes.EXIT_INTERNAL,
    UserError: exitcodes.EXIT_USAGE,
    OutputLockedError: exitcodes.EXIT_LOCKED,
}


def exit_code_for(exc: BaseException) -> int:
    """The exit code of an error: its class's entry in `EXIT_CODES`, else its nearest base's (70 for a bug)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return exitcodes.EXIT_INTERNAL
