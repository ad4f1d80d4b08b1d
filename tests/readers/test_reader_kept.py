"""Kept input columns: read with their types, from files or partition folders, across formats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.readers import InputError, open_inputs
from pipeline.readers.kept import hive_values, merge_fields


def _rows(inputs, batch_size: int = 3) -> list[tuple]:
    out = []
    for batch in inputs.batches(batch_size=batch_size):
        assert batch.kept is not None
        out.extend(zip(batch.ids, *batch.kept, strict=True))
    return out


def test_parquet_kept_columns_keep_their_arrow_type_across_batches(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "text": list("wxyz"),
                             "gold": pa.array([1, 0, None, 1], pa.int8()),
                             "when": pa.array([1, 2, 3, 4], pa.timestamp("s"))}), tmp_path / "in.parquet",
                   row_group_size=3)
    inputs = open_inputs([str(tmp_path / "in.parquet")], keep_columns=["gold", "when"], limit=3)
    stored = pq.read_schema(tmp_path / "in.parquet").field("when").type  # as the file holds it
    assert [(f.name, f.type) for f in inputs.kept_fields] == [("gold", pa.int8()), ("when", stored)]
    rows = _rows(inputs, batch_size=2)
    assert [r[:2] for r in rows] == [("a", 1), ("b", 0), ("c", None)]


def test_csv_and_jsonl_kept_columns_are_text(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,text,lang\n1,hi,de\n2,yo,fr\n")
    (tmp_path / "b.jsonl").write_text('{"id": "3", "text": "x", "lang": 7}\n'
                                      '{"id": "4", "text": "y", "lang": {"k": 1}}\n')
    inputs = open_inputs([str(tmp_path)], keep_columns=["lang"])
    assert inputs.kept_fields == [pa.field("lang", pa.string())]
    assert _rows(inputs) == [("1", "de"), ("2", "fr"), ("3", "7"), ("4", '{"k":1}')]


def test_a_column_missing_from_the_file_comes_from_a_partition_folder(tmp_path: Path) -> None:
    for day in ("2026-11-26", "2026-11-27"):
        folder = tmp_path / f"day={day}"
        folder.mkdir()
        (folder / "part.jsonl").write_text('{"text": "hi"}\n')
    inputs = open_inputs([str(tmp_path)], keep_columns=["day"])
    assert [r[1] for r in _rows(inputs)] == ["2026-11-26", "2026-11-27"]
    assert hive_values("/x/a=1/b=/c/f.csv") == {"a": "1", "b": ""}


def test_a_kept_column_found_nowhere_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "hi"}\n')
    with pytest.raises(InputError, match=r"a\.jsonl: no column 'gold' to keep"):
        open_inputs([str(tmp_path / "a.jsonl")], keep_columns=["gold"])


def test_a_kept_column_typed_differently_in_two_files_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["a"], "gold": pa.array([1], pa.int64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": ["b"], "gold": ["1"]}), tmp_path / "b.parquet")
    with pytest.raises(InputError, match="kept column 'gold' is string here but int64"):
        open_inputs([str(tmp_path)], keep_columns=["gold"])
    assert merge_fields([("a", [pa.field("g", pa.null())]), ("b", [pa.field("g", pa.int8())])]) == [
        pa.field("g", pa.int8())]


def test_dictionary_columns_are_kept_with_32_bit_indices_whatever_each_file_used(tmp_path: Path) -> None:
    for name, index in (("a", pa.int8()), ("b", pa.int16())):
        cat = pa.DictionaryArray.from_arrays(pa.array([0], index), pa.array([name]))
        pq.write_table(pa.table({"text": ["x"], "cat": cat}), tmp_path / f"{name}.parquet")
    inputs = open_inputs([str(tmp_path)], keep_columns=["cat"])
    assert inputs.kept_fields == [pa.field("cat", pa.dictionary(pa.int32(), pa.string()))]
    assert [r[1] for r in _rows(inputs)] == ["a", "b"]


_WITHOUT_PANDAS = """
import sys, importlib.abc
class NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pandas":
            raise ImportError("pandas is not installed")
sys.meta_path.insert(0, NoPandas())
import pyarrow.parquet as pq
from pipeline.core.labels import COLUMNS, to_table
from pipeline.readers import open_inputs
inputs = open_inputs([sys.argv[1]], keep_columns=["at", "took", "when"])
rows = [(None,) * len(COLUMNS) + kept for batch in inputs.batches() for kept in zip(*batch.kept)]
table = to_table(rows, inputs.kept_fields)
print(table.select(["at", "took", "when"]).equals(pq.read_table(sys.argv[1], columns=["at", "took", "when"])))
"""


def test_nanosecond_columns_are_kept_exactly_where_pandas_is_not_installed(tmp_path: Path) -> None:
    # pandas is no dependency: Arrow turns a nanosecond into a Python value only through pandas, and
    # without it reading a kept timestamp[ns] column (what pandas writes) stopped with a traceback
    nanos = pa.array([1_700_000_000_123_456_789, None], pa.int64())
    pq.write_table(pa.table({"text": ["a", "b"], "at": nanos.cast(pa.timestamp("ns", tz="UTC")),
                             "took": nanos.cast(pa.duration("ns")), "when": pa.array([1, None], pa.time64("ns"))}),
                   tmp_path / "in.parquet")
    result = subprocess.run([sys.executable, "-c", _WITHOUT_PANDAS, str(tmp_path / "in.parquet")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_without_kept_columns_batches_carry_none(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "hi"}\n')
    (batch,) = open_inputs([str(tmp_path / "a.jsonl")]).batches()
    assert batch.kept is None
