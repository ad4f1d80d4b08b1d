"""Fixtures shared by the test-suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_jsonl


@pytest.fixture
def comments(tmp_path: Path) -> Path:
    """Sixty short comments, some of them spam/abuse by the simulator's keyword rule."""
    texts = [
        "great photo, thanks for sharing", "buy now and click here for free money",
        "you people are vermin", "see you at the meetup on friday", "limited offer, free gift card",
    ]
    rows = [{"id": f"r{i:03d}", "text": f"{texts[i % len(texts)]} #{i}"} for i in range(60)]
    return write_jsonl(tmp_path / "comments.jsonl", rows)


@pytest.fixture(scope="session")
def s3_session():
    """moto's S3 server on 127.0.0.1, shared by the object-store tests (each uses its own bucket)."""
    from s3server import s3_server

    with s3_server() as server:
        yield server


@pytest.fixture
def s3(s3_session, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The S3 server with this process pointed at it (endpoint and credentials as the AWS SDKs read them)."""
    from pipeline.core.storage import StorageSettings, configure

    for name, value in s3_session.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where stores of s3:// outputs go
    configure(StorageSettings())
    yield s3_session
    configure(StorageSettings())
