"""The run lock of a ``gs://`` output folder: `pipeline.output.s3lock`'s rules over GCS preconditions.

GCS writes an object only if its generation matches ``ifGenerationMatch`` (``0``: only if there is
none), so the lock is created, refreshed and taken over as on S3, with the object's generation in
place of its ETag. Uploads are multipart uploads of the JSON API, whose preconditions GCS and the
fake-gcs-server emulator both honour (the emulator ignores them on simple ``media`` uploads and on
deletes, so the lock is released only after reading back its own token).

The endpoint is ``STORAGE_EMULATOR_HOST`` when set (as Google's client libraries read it; no
credentials then), else GCS, with a token from Google's default credentials (``google-auth``).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import orjson
import requests

from pipeline.core.storage import current
from pipeline.output.errors import OutputDirError
from pipeline.output.s3lock import S3Lock

__all__ = ["GcsLock", "gcs_endpoint"]


def gcs_endpoint() -> tuple[str, bool]:
    """The JSON API's root, and whether it is an emulator (no credentials)."""
    import os

    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if host:
        return (host if "://" in host else f"http://{host}").rstrip("/"), True
    return "https://storage.googleapis.com", False


class GcsLock(S3Lock):
    def _connect(self) -> Any:
        root, emulator = gcs_endpoint()
        session = requests.Session()
        if not emulator:
            session.headers["Authorization"] = f"Bearer {_token(self.location.uri)}"
        self._root = root
        return session

    def _object_url(self) -> str:
        return f"{self._root}/storage/v1/b/{self.bucket}/o/{quote(self.key, safe='')}"

    def _put(self, *, if_none_match: bool = False, if_match: str | None = None) -> str | None:
        boundary = uuid.uuid4().hex
        meta = orjson.dumps({"name": self.key, "contentType": "application/json"})
        body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode() + meta
                + f"\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode() + self._body()
                + f"\r\n--{boundary}--\r\n".encode())
        params = {"uploadType": "multipart"}
        if if_none_match:
            params["ifGenerationMatch"] = "0"
        elif if_match:
            params["ifGenerationMatch"] = if_match
        reply = self._call("post", f"{self._root}/upload/storage/v1/b/{self.bucket}/o", params=params, data=body,
                           headers={"Content-Type": f"multipart/related; boundary={boundary}"})
        if reply.status_code in (409, 412):
            return None
        return str(reply.json()["generation"])

    def _get(self) -> tuple[dict | None, str | None]:
        reply = self._call("get", self._object_url(), params={"alt": "media"})
        if reply.status_code == 404:
            return None, None
        try:
            held = orjson.loads(reply.content)
        except orjson.JSONDecodeError:
            held = {}
        return (held if isinstance(held, dict) else {}), reply.headers.get("x-goog-generation")

    def _remove(self, version: str | None) -> None:
        params = {"ifGenerationMatch": version} if version else {}
        self._call("delete", self._object_url(), params=params, ok=(404, 412))

    def _call(self, method: str, url: str, *, ok: tuple[int, ...] = (404, 409, 412), **kwargs: Any) -> Any:
        try:
            reply = self._client.request(method, url, timeout=current().timeout, **kwargs)
        except requests.RequestException as exc:
            raise OutputDirError(f"{self.location.uri}: cannot use the run lock ({type(exc).__name__})") from None
        if reply.status_code >= 400 and reply.status_code not in ok:
            raise OutputDirError(f"{self.location.uri}: cannot use the run lock (HTTP {reply.status_code}: "
                                 f"{' '.join(reply.text.split())[:200]})")
        return reply


def _token(uri: str) -> str:
    """An access token from Google's default credentials (never printed, never stored)."""
    try:
        import google.auth
        import google.auth.transport.requests
    except ImportError:
        raise OutputDirError(f"{uri}: the run lock on gs:// needs google-auth (pip install google-auth); or set "
                             "[storage] lock = false if only one run at a time writes to this folder") from None
    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
        credentials.refresh(google.auth.transport.requests.Request())
    except Exception as exc:
        raise OutputDirError(f"{uri}: no Google credentials for the run lock ({type(exc).__name__})") from None
    return credentials.token
