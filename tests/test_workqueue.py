from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.workqueue import WorkQueue


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), timeout=2.0))


def test_items_come_out_in_the_order_they_were_put() -> None:
    async def go() -> list[int]:
        queue: WorkQueue[int] = WorkQueue(high=100)
        await queue.put_many([1, 2, 3])
        await queue.put_many(range(4, 8))
        return [await queue.get() for _ in range(7)]

    assert run(go) == [1, 2, 3, 4, 5, 6, 7]


def test_get_returns_none_after_close_once_empty() -> None:
    async def go() -> list[str | None]:
        queue: WorkQueue[str] = WorkQueue(high=10)
        await queue.put_many(["a", "b"])
        queue.close()
        return [await queue.get() for _ in range(4)]

    assert run(go) == ["a", "b", None, None]


def test_waiting_worker_wakes_for_a_new_batch_and_for_close() -> None:
    async def go() -> list[int | None]:
        queue: WorkQueue[int] = WorkQueue(high=10)
        got: list[int | None] = []

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                got.append(item)
            got.append(None)

        task = asyncio.create_task(worker())
        await asyncio.sleep(0.01)
        assert got == []
        await queue.put_many([1, 2])
        await asyncio.sleep(0.01)
        assert got == [1, 2]
        queue.close()
        await task
        return got

    assert run(go) == [1, 2, None]


def test_every_waiting_worker_gets_none_on_close() -> None:
    async def go() -> list[int | None]:
        queue: WorkQueue[int] = WorkQueue(high=10)
        workers = [asyncio.create_task(queue.get()) for _ in range(3)]
        await asyncio.sleep(0.01)
        queue.close()
        return list(await asyncio.gather(*workers))

    assert run(go) == [None, None, None]


def test_put_many_blocks_at_high_and_resumes_once_drained_below_half() -> None:
    async def go() -> None:
        queue: WorkQueue[int] = WorkQueue(high=4)
        await queue.put_many([0, 1, 2, 3])
        assert len(queue) == 4
        feeder = asyncio.create_task(queue.put_many([10, 11]))
        await asyncio.sleep(0.01)
        assert not feeder.done()
        assert len(queue) == 4
        assert await queue.get() == 0  # 3 left: above half of high
        await asyncio.sleep(0.01)
        assert not feeder.done()
        assert await queue.get() == 1  # 2 left: at half of high, the feeder may add
        await asyncio.wait_for(feeder, timeout=1.0)
        assert len(queue) == 4
        assert [await queue.get() for _ in range(4)] == [2, 3, 10, 11]

    run(go)


def test_one_batch_may_overshoot_high() -> None:
    async def go() -> int:
        queue: WorkQueue[int] = WorkQueue(high=4)
        await queue.put_many([0, 1, 2])
        await queue.put_many(range(10))  # room below high: the whole batch goes in
        return len(queue)

    assert run(go) == 13


def test_drain_takes_everything_left_and_unblocks_the_feeder() -> None:
    async def go() -> None:
        queue: WorkQueue[int] = WorkQueue(high=2)
        await queue.put_many([1, 2, 3])
        feeder = asyncio.create_task(queue.put_many([4]))
        await asyncio.sleep(0.01)
        assert not feeder.done()
        assert queue.drain() == [1, 2, 3]
        assert len(queue) == 0
        await asyncio.wait_for(feeder, timeout=1.0)
        assert queue.drain() == [4]
        assert queue.drain() == []
        queue.close()
        assert await queue.get() is None

    run(go)
