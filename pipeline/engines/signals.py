"""SIGINT/SIGTERM while a run executes: the first lets calls in flight finish, the second exits at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from pipeline.core import exitcodes
from pipeline.core.records import Status
from pipeline.engines.local.runner import Run
from pipeline.engines.runlog import RunLog
from pipeline.output.store import ResultStore

__all__ = ["RunSignals"]


class RunSignals:
    """SIGINT/SIGTERM while a run executes: the first drains, the second exits at once (130)."""

    def __init__(self, run: Run, store: ResultStore, log: RunLog) -> None:
        self.run, self.store, self.log = run, store, log
        self.count = 0
        #: the handlers before the run's (the command's start-up handling), put back by `remove`
        self.previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
            handler = self.previous[sig]
            if handler is not None:  # asyncio leaves SIG_DFL: a SIGTERM while reporting would end with 143
                with contextlib.suppress(ValueError):  # not the main thread
                    signal.signal(sig, handler)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.count += 1
        if self.count == 1:
            self.run.request_stop(Status.INTERRUPTED)
            self.log.say("signal", f"moderate: {sig.name} received: finishing calls in flight (up to "
                         f"{self.run.settings.grace_seconds:g} s); send it again to stop at once", signal=sig.name)
            return
        # Second signal: stop now. Answers already received are committed to the store; shards on
        # disk are whole; the next run resumes from there.
        self.log.say("signal", f"moderate: {sig.name} received again: stopping now; run the same command to "
                     "resume", signal=sig.name)
        with contextlib.suppress(Exception):
            self.store.close()
        os._exit(exitcodes.EXIT_INTERRUPTED)
