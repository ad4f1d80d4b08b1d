"""Shard assembly: labels arrive in any order; a shard is handed on once every label is known.

Input rows [k*R, (k+1)*R) x policies make shard k. The reader closes a shard when it moves past
it (or when the input ends); a closed shard whose labels are all placed is complete and goes to
``on_complete`` (which writes it). Pure bookkeeping: no IO, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Shard", "ShardAssembler"]


@dataclass(slots=True)
class Shard:
    """Labels of input rows [start, start + shard_rows) x policies, filled as answers arrive."""

    index: int
    start: int
    labels: list = field(default_factory=list)
    rows: int = 0
    pending: int = 0
    #: labels of rows not sent because the run stopped early (the shard is then rewritten later)
    unsent: int = 0
    closed: bool = False


class ShardAssembler:
    def __init__(self, *, shard_rows: int, is_done: Callable[[int], bool],
                 on_complete: Callable[[Shard], None]) -> None:
        self.shard_rows = shard_rows
        self._is_done = is_done
        self._on_complete = on_complete
        self._open: dict[int, Shard] = {}

    @property
    def open_shards(self) -> int:
        return len(self._open)

    def shard_for(self, row_number: int) -> Shard | None:
        """The open shard of an input row; None when an earlier run already completed it."""
        index = row_number // self.shard_rows
        shard = self._open.get(index)
        if shard is not None:
            return shard
        if self._is_done(index):
            return None
        for previous in list(self._open.values()):  # the reader moved past them
            if previous.index < index:
                self.close(previous)
        shard = self._open[index] = Shard(index, index * self.shard_rows)
        return shard

    def reserve(self, shard: Shard, labels: int) -> int:
        """Room for one input row's ``labels``; returns the offset of the first."""
        base = len(shard.labels)
        shard.labels.extend([None] * labels)
        shard.rows += 1
        shard.pending += labels
        return base

    def place(self, shard: Shard, offset: int, label: tuple, *, unsent: bool) -> None:
        shard.labels[offset] = label
        shard.unsent += unsent
        shard.pending -= 1
        if shard.pending == 0 and shard.closed:
            self._complete(shard)

    def close(self, shard: Shard) -> None:
        shard.closed = True
        if shard.pending == 0:
            self._complete(shard)

    def close_all(self) -> None:
        """The input is fully read: every open shard is closed."""
        for shard in list(self._open.values()):
            self.close(shard)

    def close_stopped(self, *, labels_per_row: int) -> None:
        """The run stopped before the input ended: hand on every open shard with the labels it has.

        Labels never placed (requests dropped by the stop) and rows the reader never reached count as
        unsent, so such a shard is never taken as complete and the next run rebuilds it; until then
        the answers it holds are on disk.
        """
        for shard in list(self._open.values()):
            if shard.pending:
                shard.labels = [label for label in shard.labels if label is not None]
                shard.unsent += shard.pending
                shard.pending = 0
            shard.unsent += max(0, self.shard_rows - shard.rows) * labels_per_row
            self.close(shard)

    def _complete(self, shard: Shard) -> None:
        if self._open.get(shard.index) is not shard:
            return
        del self._open[shard.index]
        if shard.rows:  # a shard whose rows are all outside a sample is written too (with no labels)
            self._on_complete(shard)
