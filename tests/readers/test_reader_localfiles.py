"""Input files on disk: folders walked, hidden entries, link loops and our own output folders skipped."""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.readers import open_inputs
from pipeline.readers.paths import locate


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"text": text}) + b"\n")
    return path


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


def test_symbolic_link_loops_in_folders_are_walked_once(tmp_path: Path) -> None:
    touch(tmp_path / "data" / "a.jsonl")
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    assert [f.path for f in open_inputs([str(tmp_path / "data")]).files] == [str(tmp_path / "data" / "a.jsonl")]


def test_output_folders_inside_input_folders_and_globs_are_not_inputs(tmp_path: Path) -> None:
    from pipeline.output.outdir import OutputDir

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
