"""Splitting a batch input file under the limits the batch APIs set."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from support import write_jsonl

from pipeline.cli.main import main
from pipeline.core import exitcodes
from pipeline.engines.batchfiles.prepare import SplitWriter


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


# -- the file the user names with --output ---------------------------------------------------------

def prepare_cli(tmp_path: Path, output: Path) -> int:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"buy now #{i}"} for i in range(3)])
    return main(["batch", "prepare", "--input", str(data), "--policy", "spam", "--out", str(tmp_path / "out"),
                 "--output", str(output)])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moderate: error: "), err
    return lines[0]


def test_a_fifo_as_output_is_refused_in_one_line_and_left_alone(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "requests.jsonl"
    os.mkfifo(fifo)
    assert prepare_cli(tmp_path, fifo) == exitcodes.EXIT_USAGE
    line = one_error_line(capsys.readouterr().err)
    assert f"--output {fifo}" in line and "not a regular file" in line
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_symlink_as_output_writes_its_target_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "batches" / "requests.jsonl"
    real.parent.mkdir()
    link = tmp_path / "latest.jsonl"
    link.symlink_to(real)
    assert prepare_cli(tmp_path, link) == exitcodes.EXIT_OK
    assert link.is_symlink() and len(real.read_bytes().splitlines()) == 3


def test_output_in_a_missing_folder_is_one_line_and_creates_nothing(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert prepare_cli(tmp_path, tmp_path / "no" / "such" / "requests.jsonl") == exitcodes.EXIT_USAGE
    assert "does not exist" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "no").exists()
