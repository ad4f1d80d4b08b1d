from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.engines.local.workqueue import WorkQueue


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
        got = []
        for _ in range(4):
            got.append(await queue.get())
            if got[-1] is not None:
                queue.task_done()
        return got

    assert run(go) == ["a", "b", None, None]


def test_waiting_worker_wakes_for_a_new_batch_and_for_close() -> None:
    async def go() -> list[int | None]:
        queue: WorkQueue[int] = WorkQueue(high=10)
        got: list[int | None] = []

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                got.append(item)
                queue.task_done()
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


# ---- deferred items ------------------------------------------------------------------------------


def test_a_deferred_item_comes_back_after_its_delay_at_the_front() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        queue: WorkQueue[str] = WorkQueue(high=10)
        await queue.put_many(["a", "b", "c"])
        assert await queue.get() == "a"
        started = loop.time()
        queue.defer("a", 0.05)
        queue.task_done()
        assert (queue.deferred, len(queue)) == (1, 2)
        assert await queue.get() == "b"  # not back yet
        queue.task_done()
        await asyncio.sleep(0.1)
        assert (queue.deferred, len(queue)) == (0, 2)
        assert await queue.get() == "a"  # ahead of "c", which waited less
        assert loop.time() - started >= 0.05
        queue.task_done()
        assert await queue.get() == "c"

    run(go)


def test_a_deferred_item_with_no_delay_is_back_at_once() -> None:
    async def go() -> None:
        queue: WorkQueue[int] = WorkQueue(high=10)
        await queue.put_many([1, 2])
        assert await queue.get() == 1
        queue.defer(1, 0.0)
        queue.task_done()
        assert queue.deferred == 0
        assert await queue.get() == 1

    run(go)


def test_get_waits_while_an_item_is_deferred_even_when_closed() -> None:
    async def go() -> list[int | None]:
        queue: WorkQueue[int] = WorkQueue(high=10)
        await queue.put_many([1])
        queue.close()
        item = await queue.get()
        assert item == 1
        queue.defer(item, 0.05)
        queue.task_done()
        got = [await queue.get()]  # closed and empty, but 1 is coming back
        queue.task_done()
        got.append(await queue.get())
        return got

    assert run(go) == [1, None]


def test_get_waits_while_an_item_is_out_then_gets_none_when_it_is_done() -> None:
    async def go() -> None:
        queue: WorkQueue[int] = WorkQueue(high=10)
        await queue.put_many([1])
        queue.close()
        assert await queue.get() == 1
        idle = asyncio.create_task(queue.get())
        await asyncio.sleep(0.01)
        assert not idle.done()  # item 1 may still be deferred by its worker
        queue.task_done()
        assert await asyncio.wait_for(idle, timeout=1.0) is None

    run(go)


def test_idle_worker_takes_an_item_deferred_by_another() -> None:
    async def go() -> None:
        queue: WorkQueue[int] = WorkQueue(high=10)
        await queue.put_many([1])
        queue.close()
        assert await queue.get() == 1
        idle = asyncio.create_task(queue.get())
        await asyncio.sleep(0.01)
        queue.defer(1, 0.02)
        queue.task_done()
        assert await asyncio.wait_for(idle, timeout=1.0) == 1

    run(go)


def test_stop_brings_deferred_items_back_at_once_and_refuses_new_batches() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        queue: WorkQueue[int] = WorkQueue(high=10)
        await queue.put_many([1, 2, 3])
        for _ in range(2):
            item = await queue.get()
            assert item is not None
            queue.defer(item, 60.0)
            queue.task_done()
        assert queue.deferred == 2
        started = loop.time()
        queue.stop()
        assert queue.deferred == 0
        assert sorted(queue.drain()) == [1, 2, 3]
        assert loop.time() - started < 1.0
        queue.defer(4, 60.0)  # a retry decided after the stop comes back at once
        assert (queue.deferred, queue.drain()) == (0, [4])
        await queue.put_many([5])
        assert len(queue) == 0

    run(go)
