"""Reading an output folder wherever it is: the shards the manifest lists, downloads that go away, writes
that replace a file whole (S3: moto's server on loopback)."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import polars as pl
import pytest
from support import make_config, run_pipeline, write_jsonl

from pipeline.core import exitcodes
from pipeline.core.storage import StorageError, StorageSettings, configure
from pipeline.output.errors import OutputDirError
from pipeline.output.reader import OutputReader, open_for_reading


@pytest.fixture(scope="module")
def finished_run(s3_session, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One finished run of 60 comments (two shards) into ``s3://BUCKET/out``, made once: its bucket."""
    tmp = tmp_path_factory.mktemp("s3run")
    data = write_jsonl(tmp / "comments.jsonl", [{"id": f"r{i:03d}", "text": f"comment {i}"} for i in range(60)])
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_session.env().items():
            patch.setenv(name, value)
        patch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        configure(StorageSettings())
        bucket = s3_session.new_bucket()
        result = run_pipeline(make_config(tmp, [data], out=f"s3://{bucket}/out", shard_rows=40))
        configure(StorageSettings())
    assert result.code == exitcodes.EXIT_OK, result.stderr
    return bucket


@pytest.fixture
def s3_run(s3, finished_run: str) -> tuple[str, str]:
    """A copy of the finished run in a bucket of this test's own: (bucket, ``s3://BUCKET/out``)."""
    bucket = s3.new_bucket()
    client = s3.client()
    for key in s3.keys(finished_run, "out/"):
        client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": finished_run, "Key": key})
    return bucket, f"s3://{bucket}/out"


def _shard_keys(s3, bucket: str) -> list[str]:
    return [k for k in s3.keys(bucket, "out/labels/") if k.endswith(".parquet")]


def test_only_the_shards_the_manifest_lists_are_read_not_a_killed_runs_upload(s3, s3_run) -> None:
    bucket, uri = s3_run
    client = s3.client()
    first = _shard_keys(s3, bucket)[0]
    body = client.get_object(Bucket=bucket, Key=first)["Body"].read()
    client.put_object(Bucket=bucket, Key="out/labels/part-00000-deadbeef.parquet", Body=body)  # never committed
    with open_for_reading(uri) as folder:
        labels = pl.read_parquet(folder.shard_files())
        assert folder.uri == uri and str(folder) == uri
    assert labels.height == 120 and labels.select("row_number", "policy").is_unique().all()


def test_downloaded_shards_are_removed_when_the_reader_closes(s3_run) -> None:
    with open_for_reading(s3_run[1]) as folder:
        files = folder.shard_files()
        assert len(files) == 2 and all(f.is_file() for f in files)
    assert not any(f.exists() for f in files) and not files[0].parent.exists()


def test_a_listed_shard_missing_from_the_store_is_one_line_naming_it(s3, s3_run) -> None:
    bucket, uri = s3_run
    gone = _shard_keys(s3, bucket)[1]
    s3.client().delete_object(Bucket=bucket, Key=gone)
    with pytest.raises(OutputDirError, match="listed in the manifest but not in the store") as caught, \
            OutputReader(uri) as folder:
        folder.shard_files()
    assert f"s3://{bucket}/{gone}" in str(caught.value) and "\n" not in str(caught.value)


def test_a_shard_changed_after_the_run_wrote_it_is_refused(s3, s3_run) -> None:
    bucket, uri = s3_run
    key = _shard_keys(s3, bucket)[0]
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"PAR1 not the shard the run wrote")
    with pytest.raises(OutputDirError, match="its SHA-256 differs"), OutputReader(uri) as folder:
        folder.shard_files()


def test_a_manifest_listing_a_shard_outside_labels_is_refused(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    manifest = {"out_id": "x", "identity": {}, "shard_rows": 10,
                "shards": {"00000": {"file": "../../etc/passwd.parquet", "labels": 1, "input_rows": 1, "sha256": ""}}}
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(OutputDirError, match=r"shards are labels/NAME\.parquet"):
        OutputReader(tmp_path).shard_files()


def test_a_folder_without_a_manifest_reads_its_part_files(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    pl.DataFrame({"id": ["a"]}).write_parquet(tmp_path / "labels" / "part-00000.parquet")
    pl.DataFrame({"id": ["b"]}).write_parquet(tmp_path / "labels" / ".part-00001.parquet.1234.tmp")
    assert [p.name for p in OutputReader(tmp_path).shard_files()] == ["part-00000.parquet"]
    assert [p.name for p in OutputReader(f"file://{tmp_path}").shard_files()] == ["part-00000.parquet"]


def test_a_shard_replaced_while_it_is_read_is_read_again_from_the_new_manifest(s3, s3_run) -> None:
    """A rerun replacing shards (new upload, new manifest, old upload deleted) never makes a read fail."""
    bucket, uri = s3_run
    client = s3.client()
    stop = threading.Event()

    def rewrite() -> None:
        generation = 0
        while not stop.is_set() and generation < 200:
            manifest = orjson.loads(client.get_object(Bucket=bucket, Key="out/manifest.json")["Body"].read())
            old = manifest["shards"]["00000"]["file"]
            new = f"labels/part-00000-{generation:08x}.parquet"
            body = client.get_object(Bucket=bucket, Key=f"out/{old}")["Body"].read()
            client.put_object(Bucket=bucket, Key=f"out/{new}", Body=body)
            manifest["shards"]["00000"]["file"] = new
            client.put_object(Bucket=bucket, Key="out/manifest.json", Body=orjson.dumps(manifest))
            client.delete_object(Bucket=bucket, Key=f"out/{old}")
            generation += 1
            stop.wait(0.02)

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        for _ in range(8):
            with open_for_reading(uri) as folder:
                assert pl.read_parquet(folder.shard_files()).height == 120
    finally:
        stop.set()
        writer.join(10)


def test_a_file_written_back_replaces_the_object_whole(s3_run) -> None:
    uri = s3_run[1]
    with open_for_reading(uri) as folder:
        assert folder.write_text("eval.json", '{"a": 1}') == f"{uri}/eval.json"
        assert folder.write_text("eval.json", '{"a": 2}') == f"{uri}/eval.json"
        assert folder.read_json("eval.json") == {"a": 2} and folder.exists("eval.json")
        assert folder.read_bytes("nothing.json") is None and not folder.exists("nothing.json")


def test_an_unreachable_store_fails_naming_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    configure(StorageSettings(timeout=0.5))
    try:
        with pytest.raises(StorageError, match="s3://nowhere-bucket/out"):
            OutputReader("s3://nowhere-bucket/out")
    finally:
        configure(StorageSettings())
