"""The input set as a whole: order across files, limit, skip_rows for resuming, batches, identity."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.readers import InputFile, RowBatch, open_inputs


def make_mixed_inputs(root: Path) -> list[str]:
    """Five files of four formats, 47 rows in all; each text is ``<file>-<row>``."""
    root.mkdir(exist_ok=True)
    pq.write_table(pa.table({"text": [f"a-{i}" for i in range(10)]}), root / "a.parquet", row_group_size=3)
    (root / "b.jsonl").write_bytes(b"".join(orjson.dumps({"text": f"b-{i}"}) + b"\n\n" for i in range(7)))
    (root / "c.jsonl.gz").write_bytes(
        gzip.compress(b"".join(orjson.dumps({"text": f"c-{i}"}) + b"\n" for i in range(12)))
    )
    (root / "d.csv").write_text("text\n" + "".join(f"d-{i}\n" for i in range(5)))
    pq.write_table(pa.table({"text": [f"e-{i}" for i in range(13)]}), root / "e.parquet", row_group_size=5)
    return [str(root)]


ALL_TEXTS = (
    [f"a-{i}" for i in range(10)]
    + [f"b-{i}" for i in range(7)]
    + [f"c-{i}" for i in range(12)]
    + [f"d-{i}" for i in range(5)]
    + [f"e-{i}" for i in range(13)]
)


def texts_of(batches: list[RowBatch]) -> list[str | None]:
    return [t for b in batches for t in b.texts]


def test_rows_come_file_by_file_in_path_order(tmp_path: Path) -> None:
    inputs = open_inputs(make_mixed_inputs(tmp_path / "in"))
    batches = list(inputs.batches(batch_size=4))
    assert texts_of(batches) == ALL_TEXTS
    for b in batches:
        assert 1 <= len(b.ids) <= 4
        assert len(b.texts) == len(b.ids)
        assert {t.split("-")[0] for t in b.texts} == {Path(b.source).name[0]}  # a batch never spans files
    assert [Path(f.path).name for f in inputs.files] == ["a.parquet", "b.jsonl", "c.jsonl.gz", "d.csv", "e.parquet"]
    assert all(isinstance(f, InputFile) and f.size and f.mtime for f in inputs.files)
    assert inputs.total_rows is None  # the gzip file is not counted up front


def test_synthetic_ids_are_file_name_and_row_number_and_stable(tmp_path: Path) -> None:
    paths = make_mixed_inputs(tmp_path / "in")
    ids = [i for b in open_inputs(paths).batches(batch_size=5) for i in b.ids]
    assert ids[:2] == ["a.parquet:0", "a.parquet:1"]
    assert ids[10:12] == ["b.jsonl:0", "b.jsonl:1"]
    assert ids[-1] == "e.parquet:12"
    assert len(set(ids)) == len(ids)
    assert ids == [i for b in open_inputs(paths).batches(batch_size=7, skip_rows=0) for i in b.ids]


@pytest.mark.parametrize("limit", [None, 0, 1, 10, 11, 30, 47, 100])
def test_limit_caps_rows_across_files(tmp_path: Path, limit: int | None) -> None:
    inputs = open_inputs(make_mixed_inputs(tmp_path / "in"), limit=limit)
    assert texts_of(list(inputs.batches(batch_size=4))) == ALL_TEXTS[:limit]


@pytest.mark.parametrize("limit", [None, 20, 40])
@pytest.mark.parametrize("skip", [0, 1, 3, 9, 10, 11, 16, 17, 20, 29, 33, 34, 46, 47, 60])
def test_skip_rows_resumes_where_a_previous_run_stopped(tmp_path: Path, skip: int, limit: int | None) -> None:
    inputs = open_inputs(make_mixed_inputs(tmp_path / "in"), limit=limit)
    full = [(i, t) for b in inputs.batches(batch_size=6) for i, t in zip(b.ids, b.texts, strict=True)]
    resumed = [
        (i, t) for b in inputs.batches(batch_size=6, skip_rows=skip) for i, t in zip(b.ids, b.texts, strict=True)
    ]
    assert resumed == full[skip:]


def test_total_rows_when_every_file_is_counted(tmp_path: Path) -> None:
    root = Path(make_mixed_inputs(tmp_path / "in")[0])
    (root / "c.jsonl.gz").unlink()
    assert open_inputs([str(root)]).total_rows == 35
    assert open_inputs([str(root)], limit=12).total_rows == 12
    assert open_inputs([str(root)], limit=0).total_rows == 0


def test_error_rows_stay_in_their_batch(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "a"}\n{bad\n' + b'{"text": "c"}\n' * 5)
    batches = list(open_inputs([str(path)]).batches(batch_size=3))
    assert batches[0].errors is not None and batches[0].errors[1].startswith(f"{path} line 2: not valid JSON")
    assert batches[0].texts == ["a", None, "c"]
    assert [b.errors for b in batches[1:]] == [None, None]


def test_identity_depends_on_files_sizes_and_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = make_mixed_inputs(tmp_path / "in")
    first = open_inputs(paths).identity()
    assert first == open_inputs(paths, limit=5).identity()
    monkeypatch.chdir(tmp_path)
    assert open_inputs(["in"]).identity() == first  # the same files, however they are spelled
    assert open_inputs(paths, id_column="text").identity() != first
    (tmp_path / "in" / "d.csv").write_text("text\nd-0\n")
    assert open_inputs(paths).identity() != first


def test_invalid_arguments(tmp_path: Path) -> None:
    paths = make_mixed_inputs(tmp_path / "in")
    with pytest.raises(ValueError):
        open_inputs(paths, limit=-1)
    with pytest.raises(ValueError):
        next(open_inputs(paths).batches(batch_size=0))


def test_indexed_json_lines_skip_to_a_row_as_reading_from_the_start_and_compressed_files_are_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    from pipeline.readers import inputs as inputs_module

    monkeypatch.setattr(inputs_module, "COUNT_JSONL_BYTES", 0)  # nothing counted when opened
    monkeypatch.setattr(inputs_module, "INDEX_EVERY", 100)
    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(1000)]
    plain = tmp_path / "a.jsonl"
    plain.write_text("".join(orjson.dumps(r).decode() + ("\n\n" if i % 9 == 0 else "\n") for i, r in enumerate(rows)))
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    inputs = open_inputs([str(plain), str(packed)], text_column="text")
    assert inputs.total_rows is None
    assert inputs.index_rows(every=100) == [str(packed)]
    assert inputs.total_rows is None  # the compressed file is still uncounted
    fresh = open_inputs([str(plain), str(packed)], text_column="text")
    for skip in (0, 99, 100, 555, 999, 1000, 1500):
        indexed = [i for b in inputs.batches(batch_size=64, skip_rows=skip) for i in b.ids]
        assert indexed == [i for b in fresh.batches(batch_size=64, skip_rows=skip) for i in b.ids]
    only_plain = open_inputs([str(plain)], text_column="text")
    only_plain.index_rows(every=100)
    assert only_plain.total_rows == 1000
