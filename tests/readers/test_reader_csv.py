"""CSV inputs: needed columns only, every cell as text, quoted newlines, compression, column checks."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.readers import InputError, open_inputs
from pipeline.readers import csv as csv_reader
from pipeline.readers.paths import locate

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


def unterminated(rows: int, at: int, *, closed_by: int | None = None) -> bytes:
    """A CSV of ``rows`` rows whose row ``at`` opens a quote that only row ``closed_by`` (if any) closes."""
    lines = ["id,text"] + [f"{i},comment number {i}" for i in range(rows)]
    lines[1 + at] = f'{at},"unterminated start'
    if closed_by is not None:
        lines[1 + closed_by] = f'{closed_by},"quoted"'
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(("name", "compress"), [("x.csv", lambda b: b), ("x.csv.gz", gzip.compress)])
def test_an_unterminated_quote_running_to_the_end_is_an_input_error_naming_its_line(
    tmp_path: Path, name: str, compress
) -> None:
    path = tmp_path / name
    path.write_bytes(compress(unterminated(1000, 10)))
    with pytest.raises(InputError) as err:
        list(open_inputs([str(path)]).batches())  # plain files fail when counted, .gz ones when read
    assert str(err.value).startswith(f"{path} line 12: a quoted field is not closed before the end of the file")


def test_an_unterminated_quote_in_a_column_not_read_is_found_too(tmp_path: Path) -> None:
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(b'id,text,note\n1,a,fine\n2,b,"open\n3,c,d\n4,e,f\n'))
    with pytest.raises(InputError, match=r"line 3: a quoted field is not closed"):
        list(open_inputs([str(path)]).batches())


def test_a_field_spanning_implausibly_many_lines_rejects_its_row_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(unterminated(1500, 10, closed_by=1200))
    batches = list(open_inputs([str(path)]).batches())
    texts = [t for b in batches for t in b.texts]
    errors = [e for b in batches for e in (b.errors or [None] * len(b))]
    bad = [i for i, e in enumerate(errors) if e is not None]
    assert bad == [10] and texts[10] is None
    assert errors[10].startswith(f"{path} line 12: a field spans 1,191 lines")
    assert texts[:10] == [f"comment number {i}" for i in range(10)]
    assert texts[11:] == [f"comment number {i}" for i in range(1201, 1500)]


def test_quoted_fields_and_a_final_row_without_newline_are_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,text\n1,"a\nb"\n2,"last ""one"""')
    assert read([str(path)]) == (["1", "2"], ["a\nb", 'last "one"'])


def test_line_of_row_counts_quoted_newlines_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,text\n1,"two\nlines"\n\n2,x\n3,y\n')
    f = locate([str(path)])[0]
    assert [csv_reader.line_of_row(f, r) for r in range(3)] == [2, 5, 6]


def test_a_cell_that_is_not_utf8_rejects_its_row_naming_the_line_and_the_others_are_read(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,text\n1,first\n2,"caf\xe9\nau lait"\n3,third\n\xff4,fourth\n')
    batches = list(open_inputs([str(path)]).batches())
    ids = [i for b in batches for i in b.ids]
    texts = [t for b in batches for t in b.texts]
    errors = [e for b in batches for e in (b.errors or [None] * len(b))]
    assert ids == ["1", "2", "3", "\ufffd4"]
    assert texts == ["first", None, "third", None]
    assert errors[0] is None and errors[2] is None
    assert errors[1] == (f"{path} line 3: column 'text' is not valid UTF-8 (byte 0xe9 at position 4); "
                         "is the file in another encoding?")
    assert errors[3].startswith(f"{path} line 6: column 'id' is not valid UTF-8 (byte 0xff at position 1)")


def test_a_big_integer_id_is_kept_as_written(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(f"id,text\n{2**70},a\n-{2**70},b\n".encode())
    assert read([str(path)])[0] == [str(2**70), f"-{2**70}"]


RAGGED = b"id,text\n" + b"1,a\n" * 500 + b"2,b,extra\n" + b"3,c\n" * 1500


@pytest.mark.slow
@pytest.mark.parametrize("body", [unterminated(2000, 500), RAGGED], ids=["unterminated_quote", "ragged_row"])
def test_a_csv_error_ends_the_run_with_its_message_never_an_abort(tmp_path: Path, body: bytes) -> None:
    # Arrow's read-ahead threads freed the blocks they held while the interpreter shut down, and
    # the process aborted ("terminate called without an active exception", exit 134) in ~1 run in 5
    path = tmp_path / "x.csv"
    path.write_bytes(body)
    command = [sys.executable, "-m", "pipeline", "run", "--input", str(path), "--policy", "spam",
               "--provider", "simulator", "--out", str(tmp_path / "out"), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # aborts came under load
    try:
        results = [subprocess.run(command, capture_output=True, text=True, env=env, timeout=60) for _ in range(10)]
    finally:
        busy.kill()
        busy.wait()
    for result in results:
        assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
        assert result.stderr.startswith(f"moderate: error: {path}")
