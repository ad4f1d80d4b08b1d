"""`to_array` builds the same arrays as `pa.array` for the label columns' types, without pandas."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.arrowcols import to_array

TYPES = {
    pa.string(): st.text(),
    pa.int8(): st.integers(-128, 127),
    pa.int16(): st.integers(-(2**15), 2**15 - 1),
    pa.int32(): st.integers(-(2**31), 2**31 - 1),
    pa.int64(): st.integers(-(2**63), 2**63 - 1),
    pa.float32(): st.floats(width=32, allow_nan=False),
    pa.float64(): st.floats(allow_nan=False),
    pa.bool_(): st.booleans(),
    pa.list_(pa.string()): st.lists(st.text(), max_size=4),
}


@pytest.mark.parametrize("arrow_type", list(TYPES), ids=str)
@given(data=st.data())
def test_to_array_equals_pa_array(arrow_type: pa.DataType, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.none() | TYPES[arrow_type], max_size=40))
    built = to_array(values, arrow_type)
    built.validate(full=True)
    assert built.type == arrow_type
    assert built.equals(pa.array(values, type=arrow_type))


def test_empty_columns_and_all_null_columns() -> None:
    for arrow_type in TYPES:
        assert to_array([], arrow_type).equals(pa.array([], type=arrow_type))
        assert to_array([None, None], arrow_type).equals(pa.array([None, None], type=arrow_type))


def test_other_types_go_through_pa_array() -> None:
    assert to_array([b"x", None], pa.binary()).equals(pa.array([b"x", None], type=pa.binary()))


@pytest.mark.parametrize(("values", "arrow_type", "error"), [
    ([1], pa.string(), TypeError),
    ([300], pa.int8(), OverflowError),
    ([["a", 1]], pa.list_(pa.string()), TypeError),
])
def test_a_value_of_the_wrong_kind_raises(values: list, arrow_type: pa.DataType, error: type) -> None:
    with pytest.raises(error):
        to_array(values, arrow_type)


def test_building_label_tables_never_imports_pandas() -> None:
    code = ("import sys; from pipeline.core.labels import to_table, COLUMNS; "
            "to_table([tuple(None for _ in COLUMNS)] * 3); print('pandas' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
