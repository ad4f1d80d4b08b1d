"""Rows in memory written as an input file (`pipeline.readers.frames.materialize`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.readers.base import InputError
from pipeline.readers.frames import materialize


def test_ids_past_64_bits_are_kept_as_text_not_a_crash(tmp_path: Path) -> None:
    path = materialize([{"id": 2**70, "text": "a"}, {"id": 3, "text": "b"}], columns=["id", "text"],
                       text_column="text", folder=tmp_path)
    assert pq.read_table(path).to_pylist() == [{"id": str(2**70), "text": "a"}, {"id": "3", "text": "b"}]


def test_a_generator_that_fails_midway_leaves_no_file_behind(tmp_path: Path) -> None:
    def rows():
        yield {"id": 1, "text": "a"}
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        materialize(rows(), columns=["id", "text"], text_column="text", folder=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_later_chunk_of_other_types_is_one_line_naming_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.readers.frames.DICT_BATCH_ROWS", 2)
    rows = [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}, {"id": "x", "text": "c"}]
    with pytest.raises(InputError, match=r"^data=: a later batch") as info:
        materialize(rows, columns=["id", "text"], text_column="text", folder=tmp_path)
    assert "\n" not in str(info.value)
