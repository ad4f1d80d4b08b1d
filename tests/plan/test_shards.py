"""Shard assembly: labels in any order, a shard handed on once closed and every label is placed."""

from __future__ import annotations

from pipeline.plan.shards import Shard, ShardAssembler


def assembler(shard_rows: int = 3, done: frozenset[int] = frozenset()) -> tuple[ShardAssembler, list[Shard]]:
    completed: list[Shard] = []
    return ShardAssembler(shard_rows=shard_rows, is_done=lambda i: i in done, on_complete=completed.append), completed


def test_rows_map_to_shards_of_shard_rows() -> None:
    a, _ = assembler(3)
    first = a.shard_for(0)
    assert first is not None and (first.index, first.start) == (0, 0)
    assert a.shard_for(2) is first
    second = a.shard_for(3)
    assert second is not None and (second.index, second.start) == (1, 3)


def test_a_shard_completed_earlier_is_none() -> None:
    a, _ = assembler(3, done=frozenset({0}))
    assert a.shard_for(1) is None
    assert a.open_shards == 0


def test_reserve_gives_each_row_its_labels_offsets() -> None:
    a, _ = assembler()
    shard = a.shard_for(0)
    assert shard is not None
    assert [a.reserve(shard, 2) for _ in range(3)] == [0, 2, 4]
    assert (shard.rows, shard.pending, len(shard.labels)) == (3, 6, 6)


def test_labels_placed_in_any_order_complete_a_closed_shard_in_row_order() -> None:
    a, completed = assembler()
    shard = a.shard_for(0)
    assert shard is not None
    for _ in range(3):
        a.reserve(shard, 1)
    a.place(shard, 2, ("c",), unsent=False)
    a.close(shard)
    a.place(shard, 0, ("a",), unsent=True)
    assert completed == []
    a.place(shard, 1, ("b",), unsent=False)
    assert completed == [shard]
    assert shard.labels == [("a",), ("b",), ("c",)]
    assert shard.unsent == 1
    assert a.open_shards == 0


def test_an_open_shard_is_not_complete_even_when_every_label_is_placed() -> None:
    a, completed = assembler()
    shard = a.shard_for(0)
    assert shard is not None
    a.reserve(shard, 1)
    a.place(shard, 0, ("a",), unsent=False)
    assert completed == []  # more rows of it may come
    a.close(shard)
    assert completed == [shard]


def test_moving_to_a_later_shard_closes_the_earlier_ones() -> None:
    a, completed = assembler(2)
    first = a.shard_for(0)
    assert first is not None
    a.reserve(first, 1)
    a.place(first, 0, ("a",), unsent=False)
    a.shard_for(2)
    assert completed == [first] and first.closed


def test_close_all_closes_every_open_shard_and_empty_ones_are_not_handed_on() -> None:
    a, completed = assembler(2)
    full, empty = a.shard_for(0), a.shard_for(5)
    assert full is not None and empty is not None
    assert full.closed  # closed when the reader moved to row 5
    a.reserve(empty, 1)
    a.place(empty, 0, ("x",), unsent=False)
    a.close_all()
    assert completed == [empty]  # the first had no labels: nothing to write
    assert a.open_shards == 0


def test_a_shard_is_handed_on_once() -> None:
    a, completed = assembler()
    shard = a.shard_for(0)
    assert shard is not None
    a.reserve(shard, 1)
    a.place(shard, 0, ("a",), unsent=False)
    a.close(shard)
    a.close(shard)
    a.close_all()
    assert completed == [shard]


def test_a_shard_whose_rows_all_fell_outside_the_sample_is_handed_on_without_labels() -> None:
    a, completed = assembler(2)
    shard = a.shard_for(0)
    assert shard is not None
    a.reserve(shard, 0)
    a.reserve(shard, 0)
    a.close(shard)
    assert completed == [shard] and shard.labels == [] and shard.rows == 2
