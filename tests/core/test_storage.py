"""The filesystem layer: endpoints, bounded failures naming the URI, folders on a real S3 server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pipeline.core.storage import Location, StorageError, StorageSettings, bounded, configure, filesystem, s3_endpoint
from pipeline.readers import InputError, open_inputs


@pytest.fixture
def short_timeout() -> Iterator[None]:
    configure(StorageSettings(timeout=1.5))
    yield
    configure(StorageSettings())


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback server that accepts connections and never answers (a hung object store)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


def test_endpoint_follows_the_aws_sdk_variables_and_the_config_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:9000")
    assert s3_endpoint() == "http://general:9000"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:9000")
    assert s3_endpoint() == "http://s3-only:9000"
    configure(StorageSettings(endpoint_url="http://configured:9000"))
    try:
        assert s3_endpoint() == "http://configured:9000"
    finally:
        configure(StorageSettings())


def test_bounded_gives_up_after_the_timeout_naming_the_uri(short_timeout: None) -> None:
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"^s3://b/x: no answer from the object store within 1.5 s"):
        bounded("s3://b/x", lambda: time.sleep(10))
    assert time.monotonic() - started < 5


def test_bounded_returns_the_value_and_raises_the_error() -> None:
    assert bounded("s3://b/x", lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        bounded("s3://b/x", lambda: 1 / 0)


def test_a_silent_s3_endpoint_fails_input_discovery_in_bounded_time(
        short_timeout: None, silent_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", silent_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value-never-shown")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    configure(StorageSettings(timeout=1.5))
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        open_inputs(["s3://bucket/in/"])
    assert time.monotonic() - started < 10
    assert str(info.value).startswith("s3://bucket/in/: ") and "secret-value" not in str(info.value)


@pytest.mark.parametrize("uri", ["gs://some-bucket/in/data.parquet", "abfs://box@account.dfs.core.windows.net/in/"])
def test_gcs_and_azure_fail_in_bounded_time_without_credentials_or_network(
        short_timeout: None, uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_ACCOUNT_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "")  # no cloud CLI to ask for a token either
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        open_inputs([uri])
    assert time.monotonic() - started < 15
    assert str(info.value).startswith(f"{uri}: ") and "\n" not in str(info.value)


def test_azure_without_an_account_says_how_to_name_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(StorageError, match="AZURE_STORAGE_ACCOUNT_NAME"):
        filesystem("abfs://box/in/")


def test_unknown_scheme_is_named() -> None:
    with pytest.raises(StorageError, match=r"^ftp://host/x: cannot open this location"):
        filesystem("ftp://host/x")


def test_location_writes_reads_lists_and_deletes_on_s3(s3) -> None:
    bucket = s3.new_bucket()
    root = Location.parse(f"s3://{bucket}/out/")
    assert str(root) == f"s3://{bucket}/out"
    assert (root / "manifest.json").read_bytes() is None
    (root / "manifest.json").write_bytes(b"{}")
    (root / "labels" / "part-00000-0a1b2c3d.parquet").write_bytes(b"x")
    (root / "labels" / "deeper" / "other.parquet").write_bytes(b"y")
    assert (root / "manifest.json").read_bytes() == b"{}"
    assert [f.name for f in root.files()] == ["other.parquet", "part-00000-0a1b2c3d.parquet", "manifest.json"]
    assert [str(f) for f in (root / "labels").glob("part-*.parquet")] == [
        f"s3://{bucket}/out/labels/part-00000-0a1b2c3d.parquet"]
    (root / "manifest.json").delete()
    (root / "manifest.json").delete()  # already gone: no error
    assert (root / "manifest.json").read_bytes() is None
    root.probe()
