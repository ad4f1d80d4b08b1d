"""The conditional-write run lock of s3:// output folders, against a real S3-compatible server."""

from __future__ import annotations

import os
import socket
import time

import orjson
import pytest

from pipeline.core.storage import Location
from pipeline.output.outdir import OutputDirError
from pipeline.output.s3lock import S3Lock


def _lock(bucket: str) -> S3Lock:
    return S3Lock(Location.parse(f"s3://{bucket}/out") / ".lock")


def _plant(s3, bucket: str, **holder: object) -> None:
    s3.client().put_object(Bucket=bucket, Key="out/.lock", Body=orjson.dumps(holder))


def test_second_holder_is_refused_and_told_who_holds_it(s3) -> None:
    bucket = s3.new_bucket()
    first = _lock(bucket)
    first.acquire()
    try:
        with pytest.raises(OutputDirError, match=f"another run is using this directory \\(pid {os.getpid()} "):
            _lock(bucket).acquire()
    finally:
        first.release()
    assert s3.keys(bucket) == []


def test_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(s3) -> None:
    bucket = s3.new_bucket()
    _plant(s3, bucket, holder="pid 999999 on here", host=socket.gethostname(), pid=999_999,
           expires_at=time.time() + 3600)
    lock = _lock(bucket)
    lock.acquire()
    lock.release()


def test_lock_of_another_host_is_refused_until_it_expires(s3) -> None:
    bucket = s3.new_bucket()
    _plant(s3, bucket, holder="pid 1 on elsewhere", host="elsewhere", pid=1, expires_at=time.time() + 3600)
    with pytest.raises(OutputDirError, match="pid 1 on elsewhere"):
        _lock(bucket).acquire()
    _plant(s3, bucket, holder="pid 1 on elsewhere", host="elsewhere", pid=1, expires_at=time.time() - 1)
    lock = _lock(bucket)
    lock.acquire()
    lock.release()


def test_a_server_that_ignores_if_none_match_is_refused_with_the_way_out(s3, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.output.s3lock as s3lock

    real_client = s3lock._client

    def ignoring_client():  # a server that drops the condition: every PUT succeeds
        client = real_client()
        put = client.put_object

        def put_object(**args):
            args.pop("IfNoneMatch", None)
            return put(**args)

        client.put_object = put_object
        return client

    monkeypatch.setattr(s3lock, "_client", ignoring_client)
    bucket = s3.new_bucket()
    with pytest.raises(OutputDirError, match=r"ignores conditional writes .* \[storage\] lock = false"):
        _lock(bucket).acquire()
    assert s3.keys(bucket) == []


def test_a_lock_taken_over_by_another_run_stops_the_holder_writing(s3) -> None:
    bucket = s3.new_bucket()
    lock = _lock(bucket)
    lock.acquire()
    try:
        _plant(s3, bucket, holder="pid 2 on elsewhere", host="elsewhere", pid=2, expires_at=time.time() + 60)
        lock.refresh()
        with pytest.raises(OutputDirError, match="run lock was lost"):
            lock.check()
    finally:
        lock.release()
    assert s3.keys(bucket) == ["out/.lock"]  # the other run's lock is left alone
