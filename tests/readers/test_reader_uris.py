"""Input files named by URI, listed and read through pyarrow filesystems."""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.readers import open_inputs


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"text": text}) + b"\n")
    return path


def test_file_uris_are_read_through_pyarrow_filesystems(tmp_path: Path) -> None:
    touch(tmp_path / "in" / "a.jsonl", "one")
    touch(tmp_path / "in" / "sub" / "b.jsonl", "two")
    for arg in [f"file://{tmp_path}/in", f"file://{tmp_path}/in/**/*.jsonl"]:
        inputs = open_inputs([arg])
        assert [f.path for f in inputs.files] == [f"file://{tmp_path}/in/a.jsonl", f"file://{tmp_path}/in/sub/b.jsonl"]
        batches = list(inputs.batches())
        assert [(b.ids, b.texts) for b in batches] == [(["a.jsonl:0"], ["one"]), (["sub/b.jsonl:0"], ["two"])]
        assert batches[0].source == f"file://{tmp_path}/in/a.jsonl"
