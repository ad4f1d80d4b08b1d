"""The `moderate` command: argument parsing, printing, exit codes; a thin layer over the library."""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["command"]

_STARTING = b"moderate: interrupted while starting; run the same command again to start or resume\n"


def _stopped_while_starting(signum: int, frame: object) -> None:
    os.write(2, _STARTING)
    os._exit(130)


def command() -> int:
    """The console script: SIGTERM means exit 130 from the first line of ours that runs, before the imports."""
    previous = signal.signal(signal.SIGTERM, _stopped_while_starting)
    from pipeline.cli.main import main  # polars, pyarrow and aiohttp load from here on

    signal.signal(signal.SIGTERM, previous)  # main() installs its own handling at once
    return main(sys.argv[1:])
