"""A bounded hand-off between the feeder and the workers that wakes the feeder once per batch.

`asyncio.Queue` costs a future and a task switch per item once it is full. Here the feeder adds
whole batches and sleeps until the queue drains below half of its bound; a worker takes an item
without awaiting when one is there. Memory stays bounded by `high` plus one batch.

An item that must wait (a retry after Retry-After or a backoff) is `defer`-red: it comes back at
the front of the queue when its time is up, and no worker waits with it, so the others keep
sending. The queue only reports "done" when it is closed, empty and no deferred item is out.
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
        self._deferred: dict[asyncio.TimerHandle, T] = {}
        self._active = 0  # items taken and not yet marked done (they may come back deferred)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def deferred(self) -> int:
        """Items waiting for their retry time."""
        return len(self._deferred)

    def defer(self, item: T, delay: float) -> None:
        """Put ``item`` back at the front of the queue after ``delay`` seconds (at once when stopping)."""
        if self._stopped or delay <= 0.0:
            self._return(item)
            return
        handle: asyncio.TimerHandle | None = None

        def due() -> None:
            self._deferred.pop(handle, None)  # type: ignore[arg-type]
            self._return(item)

        handle = asyncio.get_running_loop().call_later(delay, due)
        self._deferred[handle] = item

    def _return(self, item: T) -> None:
        self._items.appendleft(item)
        self._ready.set()

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
        """The run is stopping: wake a waiting feeder, refuse further batches, bring deferred items back."""
        self._stopped = True
        self._room.set()
        for handle, item in list(self._deferred.items()):
            handle.cancel()
            self._items.appendleft(item)
        self._deferred.clear()
        self._ready.set()

    def close(self) -> None:
        """No more items: workers get None once the queue is empty and nothing is out or deferred."""
        self._closed = True
        self._ready.set()

    async def get(self) -> T | None:
        """The next item, or None when the queue is closed and empty."""
        items = self._items
        while not items:
            if self._closed and not self._deferred and not self._active:
                return None
            self._ready.clear()
            await self._ready.wait()
        item = items.popleft()
        self._active += 1
        if len(items) <= self._low:
            self._room.set()
        return item

    def task_done(self) -> None:
        """The item last taken is finished or deferred; wakes idle workers when nothing is left."""
        self._active -= 1
        if self._closed and not self._active and not self._deferred and not self._items:
            self._ready.set()

    def drain(self) -> list[T]:
        """Take every item left (used when the run stops)."""
        items = list(self._items)
        self._items.clear()
        self._room.set()
        return items
