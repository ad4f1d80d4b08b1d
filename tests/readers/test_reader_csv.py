"""CSV inputs: needed columns only, every cell as text, quoted newlines, compression, column checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from pipeline.readers import InputError, open_inputs
from pipeline.readers import csv as csv_reader

CSV = (
    b"id,lang,text\n"
    b'1,en,"hello, world"\n'
    b'2,fr,"two\nlines ""quoted"""\n'
    b"3,de,NA\n"
    b"4,en,\n"
    b"5,en,null\n"
    b"6,en,\xf0\x9f\x99\x82 \xe2\x80\xae\n"
)
TEXTS = ["hello, world", 'two\nlines "quoted"', "NA", "", "null", "🙂 \u202e"]


def read(paths: list[str], **kwargs: object) -> tuple[list[str], list[str | None]]:
    ids: list[str] = []
    texts: list[str | None] = []
    for batch in open_inputs(paths, **kwargs).batches(batch_size=4):
        assert batch.errors is None
        ids += batch.ids
        texts += batch.texts
    return ids, texts


@pytest.mark.parametrize(("name", "compress"), [("x.csv", lambda b: b), ("x.csv.gz", gzip.compress)])
def test_reads_csv_cells_as_text(tmp_path: Path, name: str, compress) -> None:
    path = tmp_path / name
    path.write_bytes(compress(CSV))
    ids, texts = read([str(path)])
    assert ids == ["1", "2", "3", "4", "5", "6"]
    assert texts == TEXTS


def test_synthetic_ids_without_an_id_column_and_explicit_id_column(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b",code,tweet\n0,a,first\n1,b,second\n")
    assert read([str(path)], text_column="tweet") == (["x.csv:0", "x.csv:1"], ["first", "second"])
    assert read([str(path)], text_column="tweet", id_column="code") == (["a", "b"], ["first", "second"])


def test_total_rows_counts_rows_not_newlines(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(CSV)
    assert open_inputs([str(path)]).total_rows == 6


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"id,text\n")
    assert read([str(path)]) == ([], [])


def test_missing_text_column_names_file_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"id,body,lang\n1,a,en\n")
    with pytest.raises(InputError) as err:
        open_inputs([str(path)])
    assert str(err.value) == f"{path}: no column 'text' (columns: id, body, lang)"


def test_missing_explicit_id_column(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(CSV)
    with pytest.raises(InputError, match=r"x\.csv: no id column 'uid' \(columns: id, lang, text\)"):
        open_inputs([str(path)], id_column="uid")


def test_malformed_row_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(b"id,text\n1,a\n2,b,extra\n"))
    with pytest.raises(InputError) as err:
        list(open_inputs([str(path)]).batches())
    assert str(err.value).startswith(f"{path}: ")
    assert "\n" not in str(err.value)


def test_rows_longer_than_a_parse_block_are_read_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_reader, "BLOCK_SIZE", 1024)
    texts = ["x" * (5000 if i in (30, 70) else 10) + str(i) for i in range(100)]
    path = tmp_path / "x.csv"
    path.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)))
    inputs = open_inputs([str(path)])
    assert inputs.total_rows == 100
    assert read([str(path)]) == ([str(i) for i in range(100)], texts)
    resumed = [t for b in inputs.batches(batch_size=8, skip_rows=50) for t in b.texts]
    assert resumed == texts[50:]
