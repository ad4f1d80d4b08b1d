"""Files, folders, globs and URIs merged into one sorted, named list of inputs; bad paths refused up front."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.readers import InputError, open_inputs


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"text": text}) + b"\n")
    return path


def test_globs_and_files_are_merged_sorted_and_deduplicated(tmp_path: Path) -> None:
    for name in ["2024-02/x.jsonl", "2024-01/x.jsonl", "2024-01/notes.txt", "other/y.jsonl"]:
        touch(tmp_path / name) if name.endswith(".jsonl") else (tmp_path / name).write_text("x")
    inputs = open_inputs([str(tmp_path / "2024-*" / "*"), str(tmp_path / "2024-01" / "x.jsonl")])
    assert [f.path for f in inputs.files] == [str(tmp_path / "2024-01/x.jsonl"), str(tmp_path / "2024-02/x.jsonl")]
    assert [b.ids[0] for b in inputs.batches()] == ["2024-01/x.jsonl:0", "2024-02/x.jsonl:0"]
    recursive = open_inputs([str(tmp_path / "**" / "*.jsonl")])
    assert len(recursive.files) == 3


def test_single_file_ids_use_its_name(tmp_path: Path) -> None:
    path = touch(tmp_path / "deep" / "x.jsonl")
    assert [b.ids for b in open_inputs([str(path)]).batches()] == [["x.jsonl:0"]]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("missing.jsonl", "missing.jsonl: no such file or folder"),
        ("*.nothing", r"\*.nothing: no files match this pattern"),
        ("notes*", r"notes\*: no supported input files match this pattern"),
        ("empty_dir", "empty_dir: folder has no supported input files"),
        ("notes.txt", "notes.txt: unsupported file type"),
        ("zero.jsonl", r"zero.jsonl: empty file \(0 bytes\)"),
        ("zero.parquet", r"zero.parquet: empty file \(0 bytes\)"),
        ("unknown://bucket/x.jsonl", "unknown://bucket/x.jsonl: cannot open this location"),
        ("file:///no/such/place.jsonl", "file:///no/such/place.jsonl: no such file or folder"),
    ],
)
def test_bad_paths_are_input_errors_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arg: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty_dir" / "sub").mkdir(parents=True)
    (tmp_path / "empty_dir" / "sub" / "notes.txt").write_text("x")
    (tmp_path / "zero.jsonl").write_bytes(b"")
    (tmp_path / "zero.parquet").write_bytes(b"")
    with pytest.raises(InputError, match=f"^{message}") as err:
        open_inputs([arg])
    assert "\n" not in str(err.value)


def test_one_bad_input_among_good_ones_is_reported(tmp_path: Path) -> None:
    for i in range(20):
        touch(tmp_path / f"{i:02d}.jsonl")
    (tmp_path / "13.jsonl").write_bytes(b'{"body": "x"}\n')
    with pytest.raises(InputError, match=r"13\.jsonl: no column 'text'"):
        open_inputs([str(tmp_path)])


def test_no_input_at_all_is_an_input_error() -> None:
    with pytest.raises(InputError):
        open_inputs([])
