from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.core.labels import COLUMNS, label_row
from pipeline.core.records import Outcome, Status, Usage, Verdict
from pipeline.output.outdir import Manifest, OutputDir, OutputDirError, ShardInfo, atomic_write_text

REPO = Path(__file__).resolve().parents[2]


def rows(n: int, *, start: int = 0) -> list[tuple]:
    outcome = Outcome(Status.OK, Verdict(1, "SP2", ("SP2",), "high", "ad"), Usage(100, 0, 20, 10), 1e-5, 5.0, 1, 1)
    return [
        label_row(id=str(i), policy="spam", outcome=outcome, model="m", policy_version="v1",
                  reasoning_effort="low", output_format="rationale", source="api", fingerprint=bytes(16),
                  row_number=i, input_file="in.jsonl", run_id="r1")
        for i in range(start, start + n)
    ]


# ---- lock ----------------------------------------------------------------------------------------


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of tmp_path/out."""
    script = textwrap.dedent(f"""
        import sys, time
        from pipeline.output.outdir import OutputDir
        out = OutputDir({str(tmp_path / "out")!r})
        out.lock()
        print("locked", flush=True)
        time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_lock_refuses_a_second_process_and_names_its_pid(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    with pytest.raises(OutputDirError) as info:
        OutputDir(tmp_path / "out").lock()
    message = str(info.value)
    assert f"pid {holder.pid} " in message
    assert str(tmp_path / "out") in message
    assert "\n" not in message


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait()
    out = OutputDir(tmp_path / "out")
    out.lock()
    try:
        assert (tmp_path / "out" / ".lock").read_text().startswith(f"pid {os.getpid()} on ")
    finally:
        out.unlock()


def test_lock_refuses_a_second_holder_in_the_same_process(tmp_path: Path) -> None:
    first = OutputDir(tmp_path)
    first.lock()
    try:
        with pytest.raises(OutputDirError, match=f"pid {os.getpid()} on "):
            OutputDir(tmp_path).lock()
    finally:
        first.unlock()
    second = OutputDir(tmp_path)
    second.lock()  # free again once unlocked
    second.unlock()


def test_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text("pid 999999 on some-host\n")
    out = OutputDir(tmp_path)
    out.lock()
    try:
        assert (tmp_path / ".lock").read_text() == f"pid {os.getpid()} on {os.uname().nodename}\n"
    finally:
        out.unlock()


def test_unlock_clears_the_holder(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    out.lock()
    out.unlock()
    assert (tmp_path / ".lock").read_text() == ""
    out.unlock()  # twice is harmless


def test_lock_creates_the_directory(tmp_path: Path) -> None:
    out = OutputDir(tmp_path / "a" / "b")
    out.lock()
    out.unlock()
    assert (tmp_path / "a" / "b").is_dir()


def test_lock_in_an_unusable_place_is_an_output_dir_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="cannot create output directory"):
        OutputDir(tmp_path / "file" / "out").lock()


# ---- shards --------------------------------------------------------------------------------------


def test_write_shard_is_atomic_and_hashes_the_file(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    info = out.write_shard(3, rows(5), input_rows=5, unsent=0)
    final = tmp_path / "labels" / "part-00003.parquet"
    assert info == ShardInfo("labels/part-00003.parquet", 5, 5, hashlib.sha256(final.read_bytes()).hexdigest(), 0)
    assert info.complete
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["part-00003.parquet"]  # no temp file


def test_shard_holds_the_rows_with_the_label_schema(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    out.write_shard(0, rows(3), input_rows=3, unsent=0)
    table = pq.read_table(tmp_path / "labels" / "part-00000.parquet")
    assert tuple(table.column_names) == tuple(c.name for c in COLUMNS)
    assert table.column("id").to_pylist() == ["0", "1", "2"]
    assert table.column("violation").to_pylist() == [1, 1, 1]
    assert table.column("rule_ids").to_pylist() == [["SP2"]] * 3


def test_empty_shard_is_written(tmp_path: Path) -> None:
    info = OutputDir(tmp_path).write_shard(0, [], input_rows=0, unsent=0)
    assert info.labels == 0
    assert pq.read_table(tmp_path / "labels" / "part-00000.parquet").num_rows == 0


def test_rewriting_a_shard_replaces_it(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    partial = out.write_shard(0, rows(2), input_rows=4, unsent=2)
    assert not partial.complete
    whole = out.write_shard(0, rows(4), input_rows=4, unsent=0)
    assert whole.sha256 != partial.sha256
    assert pq.read_table(tmp_path / whole.file).num_rows == 4


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    out.write_shard(0, rows(1), input_rows=1, unsent=0)
    (tmp_path / "labels" / ".part-00001.parquet.tmp").write_bytes(b"half a shard")
    out.remove_stale_temp_files()
    assert [p.name for p in (tmp_path / "labels").iterdir()] == ["part-00000.parquet"]


# ---- manifest ------------------------------------------------------------------------------------


def test_manifest_round_trips(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    manifest = out.new_manifest(identity={"model": "m", "policies": {"spam": "v1"}}, shard_rows=20000)
    manifest.shards[0] = out.write_shard(0, rows(3), input_rows=3, unsent=0)
    manifest.shards[1] = out.write_shard(1, rows(1), input_rows=2, unsent=1)
    manifest.finished, manifest.total_rows = True, 5
    out.write_manifest(manifest)
    again = out.read_manifest()
    assert again == manifest
    assert again is not None and again.shards[1].unsent == 1
    assert not (tmp_path / ".manifest.json.tmp").exists()


def test_new_manifests_get_distinct_ids(tmp_path: Path) -> None:
    a = OutputDir(tmp_path).new_manifest(identity={}, shard_rows=10)
    b = OutputDir(tmp_path).new_manifest(identity={}, shard_rows=10)
    assert a.out_id != b.out_id and len(a.out_id) == 32


def test_missing_manifest_reads_as_none(tmp_path: Path) -> None:
    assert OutputDir(tmp_path).read_manifest() is None


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"identity": {}}', b"[]",
     b'{"out_id": "a", "identity": {}, "shard_rows": 1, "shards": {"x": {}}}',
     b'{"out_id": "a", "identity": {}, "shard_rows": 1, "shards": {"00000": {"file": "f", "extra": 1}}}',
     b'{"out_id": "a", "identity": {}, "shard_rows": 1, "shards": []}'],
    ids=["not-json", "no-out-id", "list", "bad-index", "bad-shard", "shards-list"],
)
def test_unreadable_manifest_is_an_output_dir_error(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / "manifest.json").write_bytes(raw)
    with pytest.raises(OutputDirError, match=r"unreadable manifest.*--force"):
        OutputDir(tmp_path).read_manifest()


def test_manifest_json_is_stable() -> None:
    manifest = Manifest("abc", {"model": "m"}, 10, {2: ShardInfo("labels/part-00002.parquet", 4, 2, "00", 0)})
    raw = manifest.to_json()
    assert b'"00002"' in raw and b'"version": 1' in raw
    assert Manifest.from_json(raw) == manifest


# ---- clear and reports ---------------------------------------------------------------------------


def test_clear_removes_shards_manifest_and_reports_but_not_the_store(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    manifest = out.new_manifest(identity={}, shard_rows=10)
    manifest.shards[0] = out.write_shard(0, rows(1), input_rows=1, unsent=0)
    manifest.shards[1] = out.write_shard(1, rows(1), input_rows=1, unsent=0)
    out.write_manifest(manifest)
    atomic_write_text(tmp_path / "cost_report.json", "{}")
    atomic_write_text(tmp_path / "cost_report.md", "# cost")
    (tmp_path / "store.sqlite").write_bytes(b"db")
    (tmp_path / "store.sqlite-wal").write_bytes(b"wal")
    out.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels", "store.sqlite", "store.sqlite-wal"]
    assert list((tmp_path / "labels").iterdir()) == []
    assert (tmp_path / "store.sqlite").read_bytes() == b"db"


def test_clear_of_an_empty_directory(tmp_path: Path) -> None:
    OutputDir(tmp_path / "new").clear()


def test_atomic_write_text_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cost_report.md"
    path.write_text("old")
    atomic_write_text(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in tmp_path.iterdir()] == ["cost_report.md"]


# ---- a folder that is not ours -------------------------------------------------------------------


def test_lock_refuses_a_folder_with_files_and_no_manifest(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "mine.parquet").write_bytes(b"user data")
    with pytest.raises(OutputDirError) as info:
        OutputDir(tmp_path).lock()
    message = str(info.value)
    assert "not an output folder" in message and "labels/mine.parquet" in message and "\n" not in message
    assert (tmp_path / "labels" / "mine.parquet").read_bytes() == b"user data"
    assert not (tmp_path / ".lock").exists()


def test_lock_accepts_a_folder_holding_only_a_store_and_an_empty_labels_folder(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "store.sqlite").write_bytes(b"db")
    out = OutputDir(tmp_path)
    out.lock()
    out.unlock()


def test_clear_leaves_files_the_manifest_does_not_list(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    manifest = out.new_manifest(identity={}, shard_rows=10)
    manifest.shards[0] = out.write_shard(0, rows(1), input_rows=1, unsent=0)
    out.write_manifest(manifest)
    (tmp_path / "labels" / "mine.parquet").write_bytes(b"user data")
    (tmp_path / "labels" / "part-00007.parquet").write_bytes(b"not listed")
    out.clear()
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["mine.parquet", "part-00007.parquet"]
    assert not out.manifest_path.exists()


def test_clear_with_an_unreadable_manifest_removes_only_shard_names_of_ours(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    out.write_shard(0, rows(1), input_rows=1, unsent=0)
    (tmp_path / "labels" / "mine.parquet").write_bytes(b"user data")
    out.manifest_path.write_bytes(b"{not json")
    out.clear()
    assert [p.name for p in (tmp_path / "labels").iterdir()] == ["mine.parquet"]


def test_fresh_run_into_a_folder_holding_its_own_input_is_refused_and_deletes_nothing(tmp_path: Path) -> None:
    from support import make_config, run_pipeline, write_jsonl

    from pipeline.core import exitcodes

    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    data = write_jsonl(out / "labels" / "input.parquet.jsonl", [{"id": "a", "text": "hello"}])
    (out / "labels" / "theirs.parquet").write_bytes(b"someone's shard")
    (out / "cost_report.md").write_text("someone's report")
    result = run_pipeline(make_config(tmp_path, [data]))
    assert result.code == exitcodes.EXIT_USAGE
    assert result.stderr.count("\n") == 1 and "not an output folder" in result.stderr
    assert result.stats.requests == 0
    assert (out / "labels" / "theirs.parquet").read_bytes() == b"someone's shard"
    assert (out / "cost_report.md").read_text() == "someone's report"
    assert data.exists()


def test_an_output_folder_inside_the_input_folder_is_not_read_back_as_input(tmp_path: Path) -> None:
    from support import make_config, run_pipeline, write_jsonl

    from pipeline.core import exitcodes

    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "in.jsonl", [{"id": f"r{i}", "text": f"text {i}"} for i in range(10)])
    config = make_config(tmp_path, [data], out=str(data / "labelled"))
    first = run_pipeline(config)
    assert first.code == exitcodes.EXIT_OK, first.stderr
    again = run_pipeline(config)
    assert again.code == exitcodes.EXIT_OK, again.stderr
    assert "nothing to do" in again.stderr and again.stats.requests == 0
    assert again.labels().height == 10 * 2


def test_shard_sha256_matches_the_manifest_until_the_file_changes(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    info = out.write_shard(0, rows(2), input_rows=2, unsent=0)
    assert out.shard_sha256(info.file) == info.sha256
    (tmp_path / info.file).write_bytes(b"changed")
    assert out.shard_sha256(info.file) != info.sha256
    (tmp_path / info.file).unlink()
    assert out.shard_sha256(info.file) is None


def test_a_report_that_does_not_fit_on_the_disk_leaves_no_temp_file(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(tmp_path / "cost_report.json", "{}")
    assert list(tmp_path.iterdir()) == []
