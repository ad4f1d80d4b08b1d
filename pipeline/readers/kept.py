"""Kept input columns (``--keep-columns``): where each comes from in a file and its Arrow type.

A kept column is read from the file when the file has it (Parquet: with the file's own Arrow type;
JSON Lines and CSV: as text, numbers written as digits and objects as JSON), else from a hive
partition folder of the file's path (``.../lang=de/part-0.parquet`` gives ``lang = "de"``, text).
Every input file must give every kept column one way or the other, with the same type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline.readers.base import InputError, columns_hint, to_text

__all__ = ["KeptColumns", "hive_values", "merge_fields", "resolve"]


@dataclass(slots=True)
class KeptColumns:
    """One file's kept columns: those read from the file, and constants from its partition folders."""

    from_file: list[str] = field(default_factory=list)
    constants: dict[str, str] = field(default_factory=dict)
    fields: list[pa.Field] = field(default_factory=list)

    def values(self, read: dict[str, list[Any]], n: int, *, as_text: bool) -> list[list[Any]]:
        """Per kept column (in order), the values of ``n`` rows: read ones, or the partition constant."""
        out = []
        for f in self.fields:
            if f.name in self.constants:
                out.append([self.constants[f.name]] * n)
            else:
                column = read[f.name]
                out.append([to_text(v) for v in column] if as_text else column)
        return out


def hive_values(path: str) -> dict[str, str]:
    """``name=value`` folders of a path, innermost last.

    >>> hive_values("s3://bucket/data/date=2026-11-27/lang=de/part-0.parquet")
    {'date': '2026-11-27', 'lang': 'de'}
    """
    parts = path.replace("\\", "/").split("/")[:-1]
    found = {}
    for part in parts:
        name, eq, value = part.partition("=")
        if eq and name:
            found[name] = value
    return found


def resolve(path: str, keep: Sequence[str], names: Sequence[str], schema: pa.Schema | None) -> KeptColumns:
    """Where one file's kept columns come from; ``schema`` is the file's Arrow schema (Parquet) or None.

    Raises InputError naming the file when a kept column is neither a column nor a partition folder.
    """
    kept = KeptColumns()
    partitions = hive_values(path)
    for name in keep:
        if name in names:
            kept.from_file.append(name)
            arrow_type = _shard_type(schema.field(name).type) if schema is not None else pa.string()
            kept.fields.append(pa.field(name, arrow_type))
        elif name in partitions:
            kept.constants[name] = partitions[name]
            kept.fields.append(pa.field(name, pa.string()))
        else:
            raise InputError(f"{path}: no column {name!r} to keep (columns: {columns_hint(list(names))}; "
                             "nor a name=value folder in its path)")
    return kept


def _shard_type(arrow_type: pa.DataType) -> pa.DataType:
    """A file's column type as the shards hold it: dictionaries with 32-bit indices.

    Each file (each row group) has a dictionary of its own; a shard gathers rows of several, whose
    values together may not fit the file's index type (two files of 100 values each, 8-bit indices).
    """
    if pa.types.is_dictionary(arrow_type):
        return pa.dictionary(pa.int32(), arrow_type.value_type, arrow_type.ordered)
    return arrow_type


def merge_fields(per_file: Sequence[tuple[str, list[pa.Field]]]) -> list[pa.Field]:
    """The kept columns' types over all files; a column typed differently in two files is an error."""
    merged: dict[str, tuple[pa.Field, str]] = {}
    for path, fields in per_file:
        for f in fields:
            seen = merged.get(f.name)
            if seen is None:
                merged[f.name] = (f, path)
            elif seen[0].type != f.type:
                if pa.types.is_null(seen[0].type):
                    merged[f.name] = (f, path)
                elif not pa.types.is_null(f.type):
                    raise InputError(f"{path}: kept column {f.name!r} is {f.type} here but {seen[0].type} in "
                                     f"{seen[1]}")
    return [f for f, _ in merged.values()]
