"""A bounded hand-off between the feeder and the workers that wakes the feeder once per batch.

`asyncio.Queue` costs a future and a task switch per item once it is full. Here the feeder adds
whole batches and sleeps until the queue drains below half of its bound; a worker takes an item
without awaiting when one is there. Memory stays bounded by `high` plus one batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class WorkQueue(Generic[T]):
    def __init__(self, *, high: int) -> None:
        self._items: deque[T] = deque()
        self._high = high
        self._low = max(1, high // 2)
        self._ready = asyncio.Event()  # items to take, or closed
        self._room = asyncio.Event()  # the feeder may add more
        self._closed = False
        self._stopped = False

    def __len__(self) -> int:
        return len(self._items)

    async def put_many(self, items: Iterable[T]) -> None:
        """Add a batch once the queue has room (it may then exceed `high` by one batch)."""
        while len(self._items) >= self._high and not self._stopped:
            self._room.clear()
            await self._room.wait()
        if self._stopped:  # the run is stopping: nothing more is taken
            return
        self._items.extend(items)
        if self._items:
            self._ready.set()

    def stop(self) -> None:
        """The run is stopping: wake a waiting feeder and refuse further batches."""
        self._stopped = True
        self._room.set()

    def close(self) -> None:
        """No more items: workers get None once the queue is empty."""
        self._closed = True
        self._ready.set()

    async def get(self) -> T | None:
        """The next item, or None when the queue is closed and empty."""
        items = self._items
        while not items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        item = items.popleft()
        if len(items) <= self._low:
            self._room.set()
        return item

    def drain(self) -> list[T]:
        """Take every item left (used when the run stops)."""
        items = list(self._items)
        self._items.clear()
        self._room.set()
        return items
