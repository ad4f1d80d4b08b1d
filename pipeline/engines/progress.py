"""The progress bar (a terminal only) and the one-line summary."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


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
