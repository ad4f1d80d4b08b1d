"""The run lock of an ``abfs://`` output folder: `pipeline.output.s3lock`'s rules over Azure Blob conditions.

Azure Blob Storage honours ``If-None-Match: *`` and ``If-Match: <ETag>`` on Put Blob and Delete
Blob (Azurite too), so the lock is the S3 lock's, on the Blob endpoint of the folder's account.
Requests are signed with the account key (``AZURE_STORAGE_ACCOUNT_KEY``, Shared Key); the endpoint
is ``AZURE_STORAGE_ENDPOINT`` when set (Azurite: path-style URLs), else
``https://ACCOUNT.blob.core.windows.net``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
from typing import Any
from urllib.parse import quote

import orjson
import requests

from pipeline.core.storage import Location, current
from pipeline.output.errors import OutputDirError
from pipeline.output.s3lock import S3Lock

__all__ = ["AzureLock", "write_whole"]

API_VERSION = "2021-08-06"
#: the headers a Shared Key signature covers, in order (before the x-ms-* headers and the resource)
_SIGNED = ("content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
           "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range")


class AzureLock(S3Lock):
    def _connect(self) -> Any:
        uri = self.location.uri
        container_part = uri.split("://", 1)[1].split("/", 1)[0]
        _, _, host = container_part.partition("@")
        self._account = host.split(".", 1)[0] if host else os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "")
        key = os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")
        if not key or not self._account:
            raise OutputDirError(f"{uri.rsplit('/', 1)[0]}: the run lock on abfs:// signs with the storage account's "
                                 "key: set AZURE_STORAGE_ACCOUNT_KEY (and the account), or set [storage] lock = false "
                                 "if only one run at a time writes to this folder")
        self._key = base64.b64decode(key)
        endpoint = os.environ.get("AZURE_STORAGE_ENDPOINT")
        if endpoint:  # an emulator: path-style, the account first in the path
            self._root, self._prefix = f"{endpoint.rstrip('/')}/{self._account}", f"/{self._account}"
        else:
            self._root, self._prefix = f"https://{self._account}.blob.core.windows.net", ""
        return requests.Session()

    def _put(self, *, if_none_match: bool = False, if_match: str | None = None) -> str | None:
        headers = {"x-ms-blob-type": "BlockBlob", "Content-Type": "application/json"}
        if if_none_match:
            headers["If-None-Match"] = "*"
        if if_match:
            headers["If-Match"] = if_match
        reply = self._call("PUT", body=self._body(), headers=headers)
        return None if reply.status_code in (409, 412) else reply.headers["ETag"]

    def _get(self) -> tuple[dict | None, str | None]:
        reply = self._call("GET")
        if reply.status_code == 404:
            return None, None
        try:
            held = orjson.loads(reply.content)
        except orjson.JSONDecodeError:
            held = {}
        return (held if isinstance(held, dict) else {}), reply.headers.get("ETag")

    def _remove(self, version: str | None) -> None:
        self._call("DELETE", headers={"If-Match": version} if version else {})

    def _call(self, method: str, *, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        path = "/" + quote(self.location.path)  # container/blob
        headers = {**(headers or {}), "x-ms-date": dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
                   "x-ms-version": API_VERSION}
        headers["Authorization"] = f"SharedKey {self._account}:{self._sign(method, path, headers, len(body))}"
        try:
            reply = self._client.request(method, self._root + path, data=body, headers=headers,
                                         timeout=current().timeout)
        except requests.RequestException as exc:
            raise OutputDirError(f"{self.location.uri}: cannot use the run lock ({type(exc).__name__})") from None
        if reply.status_code >= 400 and reply.status_code not in (404, 409, 412):
            raise OutputDirError(f"{self.location.uri}: cannot use the run lock (HTTP {reply.status_code}: "
                                 f"{' '.join(reply.text.split())[:200]})")
        return reply

    def _sign(self, method: str, path: str, headers: dict[str, str], length: int) -> str:
        values = {k.lower(): v for k, v in headers.items()}
        values["content-length"] = str(length) if length else ""
        ms = "".join(f"{k}:{v}\n" for k, v in sorted(values.items()) if k.startswith("x-ms-"))
        text = "\n".join([method, *(values.get(h, "") for h in _SIGNED)]) + "\n" + ms \
            + f"/{self._account}{self._prefix}{path}"
        return base64.b64encode(hmac.new(self._key, text.encode(), hashlib.sha256).digest()).decode()


def write_whole(location: Location, data: bytes) -> bool:
    """Replace the blob at ``location`` in one Put Blob, so that readers see the old one or the new one.

    pyarrow's Azure output stream creates the blob empty and commits its blocks on close: a process
    killed in between leaves an empty blob (an empty manifest). False when no account key is set
    (the caller then writes through pyarrow).
    """
    blob = AzureLock(location)
    try:
        blob._client = blob._connect()
    except OutputDirError:
        return False
    blob._call("PUT", body=data, headers={"x-ms-blob-type": "BlockBlob"})
    return True
