"""Where concurrent requests wait or are turned away: vLLM's engine slots, ModelsLab's account queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Engine:
    """``slots`` requests run at once; the others wait their turn in arrival order (never refused)."""

    def __init__(self, slots: int) -> None:
        self._slots = asyncio.Semaphore(slots)
        self.running = 0
        self.waiting = 0
        self.peak_waiting = 0  # the most requests ever waiting at once

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.waiting += 1
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()


class AccountQueue:
    """At most ``size`` requests of an account in progress; ``enter`` says False when it is full."""

    def __init__(self) -> None:
        self.busy = 0

    def enter(self, size: int) -> bool:
        if self.busy >= size:
            return False
        self.busy += 1
        return True

    def leave(self) -> None:
        self.busy -= 1
