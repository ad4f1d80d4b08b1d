"""JSON Lines inputs: compression, bad lines kept as rows, value conversion, column checks, counting."""

from __future__ import annotations

import bz2
import gzip
import os
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.readers import InputError, RowBatch, open_inputs
from pipeline.readers import jsonl as jsonl_reader
from pipeline.readers.paths import locate


def lines(*rows: object) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def read_all(paths: list[str], **kwargs: object) -> list[RowBatch]:
    return list(open_inputs(paths, **kwargs).batches())


def flat(batches: list[RowBatch]) -> tuple[list[str], list[str | None], list[str | None]]:
    ids, texts, errors = [], [], []
    for b in batches:
        ids += b.ids
        texts += b.texts
        errors += b.errors if b.errors is not None else [None] * len(b.ids)
    return ids, texts, errors


ROWS = [{"id": "a", "text": "first"}, {"id": "b", "text": "second"}, {"id": "c", "text": "third"}]


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("x.jsonl", lambda b: b),
        ("x.ndjson", lambda b: b),
        ("x.jsonl.gz", gzip.compress),
        ("x.ndjson.gz", gzip.compress),
        ("x.jsonl.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("x.jsonl.bz2", bz2.compress),
        ("X.JSONL.GZ", gzip.compress),
    ],
)
def test_reads_plain_and_compressed_jsonl(tmp_path: Path, name: str, compress) -> None:
    path = tmp_path / name
    path.write_bytes(compress(lines(*ROWS)))
    ids, texts, errors = flat(read_all([str(path)]))
    assert ids == ["a", "b", "c"]
    assert texts == ["first", "second", "third"]
    assert errors == [None, None, None]


def test_reads_streamed_zstd_and_multi_member_gzip(tmp_path: Path) -> None:
    data = lines(*ROWS)
    cobj = zstandard.ZstdCompressor().compressobj()  # no content size in the frame header
    (tmp_path / "a.jsonl.zst").write_bytes(cobj.compress(data) + cobj.flush())
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(data[:20]) + gzip.compress(data[20:]))
    ids, _, _ = flat(read_all([str(tmp_path / "a.jsonl.zst"), str(tmp_path / "b.jsonl.gz")], id_column="id"))
    assert ids == ["a", "b", "c"] * 2


def test_bad_lines_are_kept_as_error_rows_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "ok"}\n\n{"text": broken\n   \n[1, 2]\n"just a string"\n{"text": "last"}')
    batches = read_all([str(path)])
    ids, texts, errors = flat(batches)
    assert ids == ["x.jsonl:0", "x.jsonl:1", "x.jsonl:2", "x.jsonl:3", "x.jsonl:4"]
    assert texts == ["ok", None, None, None, "last"]
    assert errors[0] is None and errors[4] is None
    assert errors[1].startswith(f"{path} line 3: not valid JSON")
    assert errors[2] == f"{path} line 5: not a JSON object"
    assert errors[3] == f"{path} line 6: not a JSON object"


def test_an_object_without_the_text_key_is_an_error_row_keeping_its_id(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(lines({"id": "a", "text": "ok"}, {"id": "b", "body": "elsewhere"}, {"id": "c", "text": None},
                           {"id": "d", "text": ""}))
    ids, texts, errors = flat(read_all([str(path)]))
    assert ids == ["a", "b", "c", "d"]
    assert texts == ["ok", None, None, ""]
    assert errors == [None, f"{path} line 2: no key 'text'", None, None]


def test_clean_batches_have_no_error_list(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(lines(*[{"text": str(i)} for i in range(10)]) + b"nope\n")
    batches = list(open_inputs([str(path)]).batches(batch_size=4))
    assert [b.errors for b in batches[:2]] == [None, None]
    assert batches[2].errors[:2] == [None, None]
    assert batches[2].errors[2].startswith(f"{path} line 11: not valid JSON (")


def test_texts_keep_every_character_and_other_values_become_strings(tmp_path: Path) -> None:
    odd = "tab\there\x00nul \u202eRTL\u202c emoji 🙂 zwj 👩‍👩‍👧 line\u2028sep\r"
    rows = [
        {"text": odd},
        {"text": 42},
        {"text": 1.5},
        {"text": True},
        {"text": {"b": [1, "x"]}},
        {"text": ["a", None]},
        {"text": None},
        {"text": ""},
    ]
    path = tmp_path / "x.jsonl"
    path.write_bytes(lines(*rows))
    _, texts, errors = flat(read_all([str(path)]))
    assert texts == [odd, "42", "1.5", "True", '{"b":[1,"x"]}', '["a",null]', None, ""]
    assert errors == [None] * len(rows)


def test_crlf_line_endings_and_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a"}\r\n{"text": "b"}\r\n')
    _, texts, errors = flat(read_all([str(path)]))
    assert texts == ["a", "b"]
    assert errors == [None, None]


def test_ids_from_the_id_key_as_strings_else_synthetic(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(lines({"id": 7, "text": "a"}, {"text": "b"}, {"id": None, "text": "c"}, {"id": "z", "text": "d"}))
    ids, _, _ = flat(read_all([str(path)]))
    assert ids == ["7", "x.jsonl:1", "x.jsonl:2", "z"]


def test_explicit_id_column(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(lines({"id": 1, "uid": "u1", "text": "a"}, {"id": 2, "uid": "u2", "text": "b"}))
    ids, _, _ = flat(read_all([str(path)], id_column="uid"))
    assert ids == ["u1", "u2"]


def test_text_column_missing_from_the_first_object_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(lines({"id": 1, "body": "a"}, {"text": "b"}))
    with pytest.raises(InputError) as err:
        open_inputs([str(path)])
    assert str(err.value) == f"{path}: no column 'text' (keys on line 1: id, body)"


def test_first_object_is_found_after_blank_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\n  \nnot json\n{"body": "a"}\n')
    with pytest.raises(InputError, match=r"no column 'text' \(keys on line 4: body\)"):
        open_inputs([str(path)])


def test_explicit_id_column_missing_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(lines({"text": "a"}))
    with pytest.raises(InputError, match=r"x\.jsonl: no id column 'uid'"):
        open_inputs([str(path)], id_column="uid")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\n \n\n", "no rows"),
        (b'[{"text": "a"},\n {"text": "b"}]\n', "not JSON Lines"),
    ],
)
def test_files_without_json_objects_are_input_errors(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(data)
    with pytest.raises(InputError, match=message) as err:
        open_inputs([str(path)])
    assert str(path) in str(err.value)


def test_truncated_gzip_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    data = gzip.compress(lines(*[{"text": os.urandom(50).hex()} for i in range(50_000)]))
    path.write_bytes(data[: len(data) // 2])
    inputs = open_inputs([str(path)])  # the start of the file is fine
    with pytest.raises(InputError) as err:
        for _ in inputs.batches():
            pass
    assert str(err.value).startswith(f"{path}: ")
    assert "\n" not in str(err.value)


def test_total_rows_counts_plain_local_files_only(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"\n" + lines(*ROWS) + b"  \n")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(lines(*ROWS)))
    assert open_inputs([str(tmp_path / "a.jsonl")]).total_rows == 3
    assert open_inputs([str(tmp_path / "a.jsonl")], limit=2).total_rows == 2
    assert open_inputs([str(tmp_path)]).total_rows is None
    assert open_inputs([str(tmp_path)], limit=3).total_rows == 3  # the plain file alone has 3


line_strategy = st.one_of(
    st.just(b""),
    st.sampled_from([b" ", b"\t", b"\r", b"  \t ", b"\x0b"]),
    st.just(b'{"text": "x"}'),
    st.just(b' {"text": "y"} '),
    st.just(b"[1]"),
    st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(line_strategy, max_size=30), st.booleans(), st.integers(min_value=1, max_value=9))
def test_fast_row_count_matches_the_reader(
    tmp_path_factory: pytest.TempPathFactory, body: list[bytes], final_newline: bool, read_size: int
) -> None:
    path = tmp_path_factory.mktemp("count") / "x.jsonl"
    data = b"\n".join(body) + (b"\n" if final_newline else b"")
    path.write_bytes(data)
    f = locate([str(path)])[0]
    expected = sum(1 for line in data.removeprefix(b"\xef\xbb\xbf").split(b"\n") if line.strip())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jsonl_reader, "READ_SIZE", read_size)  # reads end anywhere in a line
        assert jsonl_reader.count_rows(f) == expected
        chunks = jsonl_reader.chunks(f, text_column="text", id_column=None)
        assert sum(len(c.texts) for c in chunks) == expected


def test_text_column_may_also_be_the_id_column(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(lines({"text": "a"}, {"text": "b"}))
    ids, texts, _ = flat(read_all([str(path)], id_column="text"))
    assert ids == texts == ["a", "b"]


def test_integer_ids_beyond_64_bits_are_kept_as_their_exact_decimal_text(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"id": %d, "text": "a"}\n{"id": -%d, "text": "b"}\n{"id": 1.5e300, "text": "c"}\n'
                     b'{"id": %d, "text": "d"}\n{"id": %d, "note": "no text"}\n'
                     % (2**70, 2**70, 2**64 - 1, 2**80))
    ids, texts, errors = flat(read_all([str(path)]))
    assert errors[4] == f"{path} line 5: no key 'text'"
    assert ids == [str(2**70), f"-{2**70}", "1.5e+300", str(2**64 - 1), str(2**80)]
    assert texts == ["a", "b", "c", "d", None]


def _hostile_lines(n: int) -> bytes:
    """Rows, blank lines, lines of spaces, CRLF, bad JSON and non-objects, in a repeating mix."""
    parts = []
    for i in range(n):
        kind = i % 7
        parts.append([f'{{"id": "r{i}", "text": "t{i}"}}', "", "   \t", f'{{"text": "crlf {i}"}}\r',
                      "not json", "[1, 2]", f'{{"id": {i}, "text": "x"}}'][kind])
    return ("\n".join(parts)).encode()


@pytest.mark.parametrize("tail", [b"", b"\n", b"\n\n  \n"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_row_index_counts_as_count_rows_and_every_seek_point_reads_as_reading_from_the_start(
        tmp_path: Path, tail: bytes, bom: bytes) -> None:
    from pipeline.readers.jsonl import chunks, count_rows, row_index
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(bom + _hostile_lines(3000) + tail)
    (f,) = locate([str(path)])
    rows, marks = row_index(f, every=97)
    assert rows == count_rows(f)
    assert [m[0] for m in marks] == list(range(97, rows, 97))

    def read(skip: int, start=None) -> list:
        out = []
        for chunk in chunks(f, text_column="text", id_column="id", skip=skip, start=start):
            out += list(zip(chunk.ids, chunk.texts, chunk.errors or [None] * len(chunk.texts), strict=True))
        return out

    for mark in (marks[0], marks[len(marks) // 2], marks[-1]):
        assert read(mark[0] + 5, mark) == read(mark[0] + 5)


def test_a_row_index_of_a_file_read_in_several_pieces_finds_rows_split_between_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.readers import jsonl
    monkeypatch.setattr(jsonl, "READ_SIZE", 16)  # pieces of 64 bytes: most lines span two
    path = tmp_path / "long.jsonl"
    path.write_bytes(_hostile_lines(500))
    (f,) = locate([str(path)])
    rows, marks = jsonl.row_index(f, every=10)
    assert rows == jsonl.count_rows(f)
    data = path.read_bytes()
    for row, offset, lines in marks:
        assert offset == 0 or data[offset - 1:offset] == b"\n"
        assert data[:offset].count(b"\n") == lines
        assert sum(1 for line in data[:offset].split(b"\n") if line and not line.isspace()) == row
