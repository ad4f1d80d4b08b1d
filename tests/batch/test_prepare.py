"""Splitting a batch input file under the limits the batch APIs set."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.batch.prepare import SplitWriter


def test_everything_in_one_file_keeps_the_name_asked_for(tmp_path: Path) -> None:
    writer = SplitWriter(tmp_path / "requests.jsonl", max_lines=10, max_bytes=1000)
    for i in range(10):
        writer.write(b"%d\n" % i)
    assert writer.close() == [tmp_path / "requests.jsonl"]
    assert len((tmp_path / "requests.jsonl").read_bytes().splitlines()) == 10


def test_a_new_file_starts_at_the_line_or_byte_limit(tmp_path: Path) -> None:
    writer = SplitWriter(tmp_path / "requests.jsonl", max_lines=3, max_bytes=10)
    for line in [b"aaaa\n", b"bbbb\n", b"cccc\n", b"d\n", b"e\n", b"f\n", b"g\n"]:
        writer.write(line)
    files = writer.close()
    assert [f.name for f in files] == ["requests-00001.jsonl", "requests-00002.jsonl", "requests-00003.jsonl"]
    assert [f.read_bytes() for f in files] == [b"aaaa\nbbbb\n", b"cccc\nd\ne\n", b"f\ng\n"]


def test_a_request_over_the_byte_limit_is_an_error(tmp_path: Path) -> None:
    writer = SplitWriter(tmp_path / "requests.jsonl", max_lines=3, max_bytes=4)
    with pytest.raises(ValueError, match="over --max-bytes"):
        writer.write(b"too long\n")
    writer.close()


def test_nothing_to_write_leaves_no_file(tmp_path: Path) -> None:
    assert SplitWriter(tmp_path / "requests.jsonl", max_lines=3, max_bytes=10).close() == []
