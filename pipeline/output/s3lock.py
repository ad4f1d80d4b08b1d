"""The run lock of an ``s3://`` output folder: an object created only if it does not exist.

S3 (since 2024) and compatible servers honour ``If-None-Match: *`` on PUT: of two runs creating
``OUT/.lock`` at once, one gets 412. The holder refreshes the lock (``If-Match`` on its own ETag)
while it runs; a lock whose holder is gone (same host, dead process) or whose refresh is overdue
is taken over with ``If-Match`` on the stale object's ETag, so two runs cannot both take it over.
A server that ignores the condition is detected (a second create must fail) and the run refused.

Credentials and endpoint come from the AWS SDK's own chain (``AWS_ENDPOINT_URL`` included) or
``[storage] endpoint_url``; nothing secret is stored in the lock object.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from typing import Any

import orjson

from pipeline.core.storage import Location, bounded, current, s3_endpoint
from pipeline.output.errors import OutputDirError, OutputDirLocked

#: a lock not refreshed for this long belongs to a run that is gone.
TTL_SECONDS = 120.0
REFRESH_SECONDS = 30.0


class S3Lock:
    def __init__(self, location: Location) -> None:
        self.location = location
        self.bucket, _, self.key = location.path.partition("/")
        self._client: Any = None
        self._etag: str | None = None
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    # -- public ------------------------------------------------------------------------------
    def acquire(self) -> None:
        uri = str(self.location)
        self._client = self._connect()
        etag = bounded(uri, lambda: self._put(if_none_match=True), what="no answer to the lock request")
        if etag is None:  # held: take it over only when its holder is gone
            held, held_etag = bounded(uri, self._get)
            if held is None:  # released meanwhile
                etag = bounded(uri, lambda: self._put(if_none_match=True))
            elif _stale(held):
                etag = bounded(uri, lambda: self._put(if_match=held_etag))
            if etag is None:
                holder = (held or {}).get("holder", "another process")
                raise OutputDirLocked(f"{self.location.uri.rsplit('/', 1)[0]}: another run is using this "
                                      f"directory ({holder})")
        self._etag = etag
        if bounded(uri, lambda: self._put(if_none_match=True)) is not None:
            self._delete()
            raise OutputDirError(
                f"{uri}: this server ignores conditional writes (If-None-Match), so it cannot hold a run lock; "
                "set [storage] lock = false if only one run at a time writes to this folder")
        self._thread = threading.Thread(target=self._refresh_loop, name="s3-lock", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise when the lock was taken over by another run (stop writing at once)."""
        if self.lost:
            raise OutputDirError(f"{self.location.uri}: the run lock was lost ({self.lost}); stopping")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._etag is not None and not self.lost:
            with contextlib.suppress(Exception):
                self._delete()
        self._etag = None

    # -- S3 calls ----------------------------------------------------------------------------
    def _body(self) -> bytes:
        return orjson.dumps({"holder": f"pid {os.getpid()} on {socket.gethostname()}", "host": socket.gethostname(),
                             "pid": os.getpid(), "token": self._token, "expires_at": time.time() + TTL_SECONDS})

    def _put(self, *, if_none_match: bool = False, if_match: str | None = None) -> str | None:
        """PUT the lock object; its ETag, or None when the condition failed (412 / 409)."""
        body = self._body()
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Body": body}
        if if_none_match:
            args["IfNoneMatch"] = "*"
        if if_match:
            args["IfMatch"] = if_match
        try:
            return self._client.put_object(**args)["ETag"]
        except Exception as exc:
            if _status(exc) in (409, 412):
                return None
            raise _error(self.location, exc) from None

    def _get(self) -> tuple[dict | None, str | None]:
        try:
            reply = self._client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            if _status(exc) == 404:
                return None, None
            raise _error(self.location, exc) from None
        try:
            held = orjson.loads(reply["Body"].read())
        except orjson.JSONDecodeError:
            held = {}
        return (held if isinstance(held, dict) else {}), reply["ETag"]

    def _delete(self) -> None:
        held, version = self._get()
        if held is not None and held.get("token") == self._token:
            self._remove(version)

    # -- what another object store does differently -------------------------------------------
    def _connect(self) -> Any:
        return _client()

    def _remove(self, version: str | None) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self.key)

    def refresh(self) -> None:
        """Push the lock's expiry forward; notice when another run has taken it over."""
        try:
            etag = self._put(if_match=self._etag)
        except OutputDirError:
            return  # unreachable for now: the next refresh tries again (the TTL is longer)
        if etag is None:
            self.lost = "another run took it over"
        else:
            self._etag = etag

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS) and not self.lost:
            self.refresh()


def _stale(held: dict) -> bool:
    if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int):
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return True  # its process is gone (killed): free at once, like a local lock
        except PermissionError:
            pass
    expires = held.get("expires_at")
    return not isinstance(expires, int | float) or time.time() > expires


def _client() -> Any:
    import boto3
    from botocore.config import Config

    timeout = current().timeout
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.session.Session().client("s3", endpoint_url=s3_endpoint(), config=config)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _error(location: Location, exc: Exception) -> OutputDirError:
    message = " ".join(str(exc).split())[:200]
    return OutputDirError(f"{location.uri}: cannot use the run lock ({type(exc).__name__}: {message})")
