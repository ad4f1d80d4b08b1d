"""Parquet inputs: needed columns, value conversion, footer checks, bounded batches, skipping row groups."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.readers import InputError, open_inputs


def write(path: Path, table: pa.Table, **kwargs: object) -> str:
    pq.write_table(table, path, **kwargs)
    return str(path)


def test_reads_text_and_integer_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", pa.table({"id": [10, 11, 12], "text": ["a", None, "c\x00d"], "n": [1, 2, 3]}))
    [batch] = open_inputs([path]).batches()
    assert batch.ids == ["10", "11", "12"]
    assert batch.texts == ["a", None, "c\x00d"]
    assert batch.errors is None
    assert batch.source == path


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        (pa.array([1, None, 3]), ["1", None, "3"]),
        (pa.array([1.5, 2.0, None]), ["1.5", "2.0", None]),
        (pa.array(["x", "y", "x"]).dictionary_encode(), ["x", "y", "x"]),
        (pa.array(["x", "y", None], pa.large_string()), ["x", "y", None]),
        (pa.array([b"x", b"\xff", None]), ["x", "\ufffd", None]),
        (pa.array([{"a": 1}, None, {"a": None}]), ['{"a":1}', None, '{"a":null}']),
    ],
)
def test_non_string_text_columns_become_strings(tmp_path: Path, column: pa.Array, expected: list) -> None:
    path = write(tmp_path / "x.parquet", pa.table({"text": column}))
    [batch] = open_inputs([path]).batches()
    assert batch.texts == expected
    assert batch.ids == ["x.parquet:0", "x.parquet:1", "x.parquet:2"]


def test_missing_text_column_names_file_and_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", pa.table({"id": [1], "body": ["a"], "lang": ["en"]}))
    with pytest.raises(InputError) as err:
        open_inputs([path])
    assert str(err.value) == f"{path}: no column 'text' (columns: id, body, lang)"


def test_missing_explicit_id_column(tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", pa.table({"id": [1], "text": ["a"]}))
    with pytest.raises(InputError, match=r"x\.parquet: no id column 'uid' \(columns: id, text\)"):
        open_inputs([path], id_column="uid")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_parquet_is_an_input_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "x.parquet"
    write(path, pa.table({"text": ["a"] * 100}))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20] if damage == "truncate" else b"not parquet at all")
    with pytest.raises(InputError, match=r"x\.parquet: not a readable Parquet file"):
        open_inputs([str(path)])


def test_50k_rows_stream_in_bounded_batches(tmp_path: Path) -> None:
    n = 50_000
    path = write(
        tmp_path / "x.parquet",
        pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"t{i}" for i in range(n)]}),
        row_group_size=7_000,
    )
    inputs = open_inputs([path])
    assert inputs.total_rows == n
    sizes, ids = [], []
    for batch in inputs.batches(batch_size=1000):
        sizes.append(len(batch.ids))
        ids += batch.ids
    assert max(sizes) <= 1000
    assert sum(sizes) == n
    assert ids == [f"r{i}" for i in range(n)]


def test_skip_rows_jumps_over_row_groups(tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", pa.table({"text": [str(i) for i in range(100)]}), row_group_size=10)
    texts = [t for b in open_inputs([path]).batches(batch_size=7, skip_rows=35) for t in b.texts]
    assert texts == [str(i) for i in range(35, 100)]
    ids = [i for b in open_inputs([path]).batches(skip_rows=98) for i in b.ids]
    assert ids == ["x.parquet:98", "x.parquet:99"]
    assert list(open_inputs([path]).batches(skip_rows=100)) == []


def test_zero_row_parquet_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", pa.table({"text": pa.array([], pa.string())}))
    inputs = open_inputs([path])
    assert inputs.total_rows == 0
    assert list(inputs.batches()) == []


def _unchecked_strings(values: list[bytes | None], arrow_type: pa.DataType | None = None) -> pa.Array:
    """A string column holding bytes that may not be UTF-8 (Parquet readers do not check)."""
    arrow_type = arrow_type or pa.string()
    raw = pa.array(values, pa.large_binary() if arrow_type == pa.large_string() else pa.binary())
    return pa.Array.from_buffers(arrow_type, len(raw), raw.buffers())


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string()], ids=str)
def test_string_columns_holding_invalid_utf8_are_read_with_replacement_characters(tmp_path: Path,
                                                                                    arrow_type: pa.DataType) -> None:
    column = _unchecked_strings([b"ok", b"bad\xed\xa0\x80", None, b"x\xff"], arrow_type)
    table = pa.table({"id": column, "text": column, "dict": column.dictionary_encode()})
    path = write(tmp_path / "x.parquet", table)
    [batch] = open_inputs([path], keep_columns=["dict"]).batches()
    assert batch.texts == ["ok", "bad\ufffd\ufffd\ufffd", None, "x\ufffd"]
    assert batch.ids[:2] == ["ok", "bad\ufffd\ufffd\ufffd"]
    assert batch.kept == [["ok", "bad\ufffd\ufffd\ufffd", None, "x\ufffd"]]


def test_invalid_utf8_inside_a_kept_nested_column_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    inner = _unchecked_strings([b"\xff", b"ok"])
    nested = pa.ListArray.from_arrays(pa.array([0, 1, 2], pa.int32()), inner)
    path = write(tmp_path / "x.parquet", pa.table({"text": ["a", "b"], "tags": nested}))
    with pytest.raises(InputError, match=r"x\.parquet: .*utf-8"):
        list(open_inputs([path], keep_columns=["tags"]).batches())
