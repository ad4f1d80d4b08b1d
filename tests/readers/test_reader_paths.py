"""Turning files, folders, globs and URIs into a sorted list of inputs, and refusing bad paths up front."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.readers import InputError, open_inputs
from pipeline.readers.paths import file_format, locate


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"text": text}) + b"\n")
    return path


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


def test_folders_are_searched_recursively_and_sorted(tmp_path: Path) -> None:
    touch(tmp_path / "data" / "b.jsonl")
    touch(tmp_path / "data" / "a" / "z.jsonl")
    touch(tmp_path / "data" / "a.jsonl")
    (tmp_path / "data" / "README.md").write_text("not an input")
    touch(tmp_path / "data" / ".hidden" / "c.jsonl")
    touch(tmp_path / "data" / "_temporary" / "d.jsonl")
    touch(tmp_path / "data" / "_SUCCESS.jsonl")
    inputs = open_inputs([str(tmp_path / "data")])
    assert [f.path for f in inputs.files] == [  # plain string order of the paths
        str(tmp_path / "data" / "a.jsonl"),
        str(tmp_path / "data" / "a" / "z.jsonl"),
        str(tmp_path / "data" / "b.jsonl"),
    ]
    assert [b.ids[0] for b in inputs.batches()] == ["a.jsonl:0", "a/z.jsonl:0", "b.jsonl:0"]


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


def test_file_uris_are_read_through_pyarrow_filesystems(tmp_path: Path) -> None:
    touch(tmp_path / "in" / "a.jsonl", "one")
    touch(tmp_path / "in" / "sub" / "b.jsonl", "two")
    for arg in [f"file://{tmp_path}/in", f"file://{tmp_path}/in/**/*.jsonl"]:
        inputs = open_inputs([arg])
        assert [f.path for f in inputs.files] == [f"file://{tmp_path}/in/a.jsonl", f"file://{tmp_path}/in/sub/b.jsonl"]
        batches = list(inputs.batches())
        assert [(b.ids, b.texts) for b in batches] == [(["a.jsonl:0"], ["one"]), (["sub/b.jsonl:0"], ["two"])]
        assert batches[0].source == f"file://{tmp_path}/in/a.jsonl"


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


def test_symbolic_link_loops_in_folders_are_walked_once(tmp_path: Path) -> None:
    touch(tmp_path / "data" / "a.jsonl")
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    assert [f.path for f in open_inputs([str(tmp_path / "data")]).files] == [str(tmp_path / "data" / "a.jsonl")]


def test_output_folders_inside_input_folders_and_globs_are_not_inputs(tmp_path: Path) -> None:
    from pipeline.outdir import OutputDir

    data = tmp_path / "data"
    (data / "2026").mkdir(parents=True)
    (data / "2026" / "in.parquet").write_bytes(b"PAR1")
    out = OutputDir(data / "2026" / "labelled")
    out.path.mkdir()
    out.new_manifest(identity={}, shard_rows=10)
    (out.labels).mkdir()
    (out.labels / "part-00000.parquet").write_bytes(b"PAR1")
    (data / "notes").mkdir()
    (data / "notes" / "manifest.json").write_text('{"files": []}')  # someone else's manifest: still input
    (data / "notes" / "more.jsonl").write_text('{"text": "x"}\n')
    for arg in (str(data), str(data / "**" / "*.parquet"), str(data / "**")):
        names = [Path(f.path).name for f in locate([arg])]
        assert "part-00000.parquet" not in names, arg
        assert "in.parquet" in names, arg
    assert "more.jsonl" in [Path(f.path).name for f in locate([str(data)])]
