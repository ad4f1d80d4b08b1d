"""Progress: a bar on a terminal, a plain line every ``log_interval`` seconds off one."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from pipeline.engines.runlog import RunLog

__all__ = ["LineProgress", "Progress", "progress_line"]


class Progress:
    """A tqdm bar over labels (rows x policies), refreshed from counters a few times a second.

    Updating from a timer instead of per label keeps the bar off the hot path. Quiet when stderr
    is not a terminal (cron, CI, pipes).
    """

    def __init__(self, *, total: int | None, enabled: bool | None = None, stream: TextIO = sys.stderr) -> None:
        disable = (not stream.isatty()) if enabled is None else not enabled
        self._bar = tqdm(total=total, unit="label", dynamic_ncols=True, disable=disable, file=stream,
                         smoothing=0.1, mininterval=0.25)
        self._shown = 0

    def update(self, *, done: int, tokens: int, cost_usd: float) -> None:
        if self._bar.disable:
            return
        self._bar.update(done - self._shown)
        self._shown = done
        self._bar.set_postfix_str(f"{tokens:,} tok, ${cost_usd:.4f}", refresh=False)

    def close(self) -> None:
        self._bar.close()


class LineProgress:
    """Progress as one plain line every ``interval`` seconds, for text logs off a terminal (cron, CI, pipes).

    Has the interface of `Progress`; the lines go through the run's log (`RunLog.say`), so they are
    redacted like every other line.
    """

    def __init__(self, log: RunLog, *, total: int | None, policies: int, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.total, self.policies, self.interval, self._clock = log, total, max(policies, 1), interval, clock
        self._started = self._last = clock()

    def update(self, *, done: int, tokens: int, cost_usd: float) -> None:
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            self.log.say("progress", progress_line(done=done, total=self.total, policies=self.policies,
                                                   elapsed=now - self._started, cost_usd=cost_usd))

    def close(self) -> None:
        pass


def progress_line(*, done: int, total: int | None, policies: int, elapsed: float, cost_usd: float) -> str:
    """One progress line: rows and labels done, labels/s, ETA and spend.

    >>> progress_line(done=600, total=2400, policies=4, elapsed=60.0, cost_usd=0.0123)
    'moderate: progress: 150 of 600 rows (600 of 2,400 labels, 25%) in 1m00s; 10.0 labels/s, ETA 3m00s; $0.0123 spent'
    """
    rate = done / elapsed if elapsed > 0 else 0.0
    if total:
        share = f"{done / total:.0%}"
        rows = f"{done // policies:,} of {total // policies:,} rows ({done:,} of {total:,} labels, {share})"
        eta = _duration((total - done) / rate) if rate > 0 and total > done else ("0s" if done >= total else "-")
    else:
        rows, eta = f"{done // policies:,} rows ({done:,} labels)", "-"
    return (f"moderate: progress: {rows} in {_duration(elapsed)}; {rate:,.1f} labels/s, ETA {eta}; "
            f"${cost_usd:.4f} spent")


def _duration(seconds: float) -> str:
    """1m00s, 2h05m, 42s."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
