"""What a file name says about an input file: its format and compression."""

from __future__ import annotations

import pytest

from pipeline.readers.located import file_format


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.parquet", ("parquet", None)),
        ("part-0.snappy.parquet", ("parquet", None)),
        ("a.jsonl", ("jsonl", None)),
        ("a.NDJSON", ("jsonl", None)),
        ("a.jsonl.gz", ("jsonl", "gzip")),
        ("a.jsonl.zst", ("jsonl", "zstd")),
        ("a.csv.gz", ("csv", "gzip")),
        ("a.json", None),
        ("a.txt", None),
        ("a.parquet.gz", None),
        ("a.gz", None),
    ],
)
def test_file_format_from_the_name(name: str, expected: tuple[str, str | None] | None) -> None:
    assert file_format(name) == expected
