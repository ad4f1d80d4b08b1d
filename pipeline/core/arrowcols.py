"""Arrow arrays from Python values for the label columns' types, built without `pa.array`.

`pa.array(list)` imports pandas on its first call when pandas is installed (Ray Data installs it),
to recognise pandas objects: ~35 MB resident and ~0.2 s for every run, for lists that never hold
one. The label schema uses five kinds of type (string, integers, floats, bool, list of string);
strings go through Arrow's own `StringBuilder`, numbers and booleans through NumPy buffers. Any
other type (input columns kept with ``--keep-columns``) still goes through `pa.array`.

None is null. The values come from typed records (`pipeline.core.labels`), so they are only checked as
far as Arrow and NumPy check them: a non-string in a string column and an integer out of the
column's range raise; a float in an integer column is truncated and a numeric string parsed, as
NumPy does. It costs about 1.5 µs a label more than `pa.array` (10 k labels of the label schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["to_array"]

_STRING = pa.string()
_LIST_OF_STRING = pa.list_(pa.string())


#: the NumPy type holding each numeric Arrow type's values
_NUMPY = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
          pa.float32(): np.float32, pa.float64(): np.float64}


def to_array(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """``values`` as an Arrow array of ``arrow_type`` (None as null)."""
    if arrow_type == _STRING:
        return _strings(values)
    if arrow_type in _NUMPY:
        return _numbers(values, arrow_type)
    if arrow_type == pa.bool_():
        return _booleans(values)
    if arrow_type == _LIST_OF_STRING:
        return _string_lists(values)
    return pa.array(values, type=arrow_type)


def _strings(values: Sequence[Any]) -> pa.Array:
    builder = pa.lib.StringBuilder()  # raises TypeError on anything but str (and bytes)
    builder.append_values(values)
    return builder.finish()


def _validity(values: Sequence[Any]) -> tuple[pa.Buffer | None, int]:
    """Arrow's validity bitmap for ``values`` (None when nothing is null) and the null count."""
    nulls = values.count(None)  # a C loop; most label columns have no nulls
    if not nulls:
        return None, 0
    missing = np.array([v is None for v in values], dtype=bool)
    return pa.py_buffer(np.packbits(~missing, bitorder="little")), nulls


def _filled(values: Sequence[Any], nulls: int) -> Sequence[Any]:
    return [0 if v is None else v for v in values] if nulls else values


def _numbers(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    validity, nulls = _validity(values)
    data = np.array(_filled(values, nulls), dtype=_NUMPY[arrow_type])
    return pa.Array.from_buffers(arrow_type, len(values), [validity, pa.py_buffer(data)], null_count=nulls)


def _booleans(values: Sequence[Any]) -> pa.Array:
    validity, nulls = _validity(values)
    bits = np.packbits(np.array(_filled(values, nulls), dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [validity, pa.py_buffer(bits)], null_count=nulls)


def _string_lists(values: Sequence[Any]) -> pa.Array:
    validity, nulls = _validity(values)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    items: list[Any] = []
    for i, value in enumerate(values):
        if value is not None:
            items.extend(value)
        offsets[i + 1] = len(items)
    child = _strings(items)
    return pa.ListArray.from_buffers(_LIST_OF_STRING, len(values), [validity, pa.py_buffer(offsets)],
                                     null_count=nulls, children=[child])
