"""Files a user names for output: links followed, devices and FIFOs written through, nothing else touched."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from support import full_device, read_fifo

from pipeline.output.outfiles import OutputFileError, open_output, output_target, temp_name


def test_a_new_file_appears_whole_and_no_temp_file_is_left(tmp_path: Path) -> None:
    target = tmp_path / "train.jsonl"
    with open_output(target, flag="--output") as handle:
        handle.write(b"{}\n")
        assert not target.exists()  # still under its hidden name
    assert target.read_bytes() == b"{}\n"
    assert os.listdir(tmp_path) == ["train.jsonl"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "train.jsonl"
    target.write_bytes(b"old\n")
    with pytest.raises(RuntimeError), open_output(target, flag="--output") as handle:
        handle.write(b"new\n")
        raise RuntimeError("the input became unreadable")
    assert target.read_bytes() == b"old\n"
    assert os.listdir(tmp_path) == ["train.jsonl"]


def test_a_file_written_again_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "train.jsonl"
    target.write_bytes(b"old\n")
    target.chmod(0o640)
    with open_output(target, flag="--output") as handle:
        handle.write(b"new\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "data" / "train.jsonl"
    real.parent.mkdir()
    real.write_bytes(b"old\n")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(real)
    with open_output(link, flag="--output") as handle:
        handle.write(b"new\n")
    assert link.is_symlink() and link.resolve() == real
    assert real.read_bytes() == b"new\n"


def test_a_fifo_is_written_through_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    thread, got = read_fifo(fifo)
    with open_output(fifo, flag="--output") as handle:
        handle.write(b"line\n")
    thread.join(timeout=10)
    assert got == [b"line\n"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(os.listdir(tmp_path)) == ["pipe"]


def test_a_full_device_is_one_line_and_stays_a_device(tmp_path: Path) -> None:
    node = full_device(tmp_path)
    full = r"^--output .*full: cannot write \(No space left on device\)$"
    with pytest.raises(OutputFileError, match=full), open_output(node, flag="--output") as handle:
        handle.write(b"x" * 100_000)
    assert stat.S_ISCHR(node.lstat().st_mode)
    assert sorted(os.listdir(tmp_path)) == ["full"]


def test_a_directory_is_refused_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(OutputFileError, match=r"^--output .*: is a directory; name a file$"):
        output_target(tmp_path, flag="--output")


def test_a_missing_folder_is_refused_and_not_created(tmp_path: Path) -> None:
    with pytest.raises(OutputFileError, match="does not exist; create it first"):
        output_target(tmp_path / "no" / "such" / "x.jsonl", flag="--output")
    assert not (tmp_path / "no").exists()


def test_a_missing_folder_inside_the_commands_output_directory_is_created(tmp_path: Path) -> None:
    target = output_target(tmp_path / "out" / "requests" / "r.jsonl", flag="--output", create_within=tmp_path / "out")
    assert target.parent.is_dir()


def test_a_device_is_refused_where_only_a_regular_file_will_do(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputFileError, match="not a regular file"):
        output_target(fifo, flag="--output", regular_only=True)


def test_two_writers_of_one_file_never_share_a_temp_name(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    assert temp_name(target) != temp_name(target)
    assert temp_name(target).name.startswith(".report.html.") and temp_name(target).suffix == ".tmp"


def test_an_error_of_the_writing_code_itself_is_not_taken_for_a_failed_write(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), open_output(tmp_path / "train.jsonl", flag="--output") as handle:
        handle.write(b"{}\n")
        open(tmp_path / "missing-input.jsonl", "rb")  # noqa: SIM115 - fails
    assert os.listdir(tmp_path) == []
