"""One filesystem layer for inputs and outputs: local paths, ``s3://``, ``gs://``, ``abfs://``, ``file://``.

Every object store goes through `pyarrow.fs` (S3, GCS and Azure are built into pyarrow). Credentials
come from each cloud's standard chain (environment, profile or config files, instance role); this
module never reads or prints a secret. The S3 endpoint comes from ``[storage] endpoint_url``, else
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` as the AWS SDKs read them.

An object store that does not answer fails within ``[storage] timeout`` seconds with a one-line
`StorageError` naming the URI: pyarrow's own timeouts and retry limits are set from it, and the
first call on a location is also bounded from outside (some credential chains probe the network).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import posixpath
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow.fs as pafs

from pipeline.core.errors import UserError

T = TypeVar("T")

#: the URI schemes an input or output may use (``gcs`` and ``abfss``/``az`` are aliases).
SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "az", "file")
DEFAULT_TIMEOUT = 30.0
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class StorageError(UserError):
    """An object store cannot be reached or used (one line, names the URI, never a secret)."""


@dataclass(frozen=True, slots=True)
class StorageSettings:
    #: S3-compatible endpoint (MinIO, Ceph, R2 ...); None: ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, else AWS.
    endpoint_url: str | None = None
    #: seconds before an unreachable or silent object store is an error.
    timeout: float = DEFAULT_TIMEOUT
    #: take a run lock on object-store outputs; False: one writer at a time is guaranteed elsewhere.
    lock: bool = True


_settings = StorageSettings()
_cache: dict[tuple, pafs.FileSystem] = {}
_cache_lock = threading.Lock()


def configure(settings: StorageSettings) -> None:
    """Set the endpoint and timeout for every object store opened from now on."""
    global _settings
    _settings = settings
    with _cache_lock:
        _cache.clear()


def current() -> StorageSettings:
    return _settings


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` paths (object stores, ``file://``), False for local paths."""
    return bool(_URI.match(path))


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if is_uri(uri) else ""


def s3_endpoint() -> str | None:
    """The S3 endpoint URL as the AWS SDKs pick it (service-specific variable first)."""
    return _settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path on it)`` for a URI; raises StorageError for an unknown scheme or setup."""
    scheme = scheme_of(uri)
    rest = uri.split("://", 1)[1]
    try:
        if scheme == "s3":
            return _s3(rest.split("/", 1)[0], uri), rest.rstrip("/") or rest
        if scheme in ("gs", "gcs"):
            emulator = os.environ.get("STORAGE_EMULATOR_HOST")  # fake-gcs-server, as Google's libraries read it
            options: dict[str, Any] = {"retry_time_limit": dt.timedelta(seconds=_settings.timeout)}
            if emulator:
                scheme_, _, hostport = (emulator if "://" in emulator else f"http://{emulator}").partition("://")
                options.update(anonymous=True, endpoint_override=hostport.rstrip("/"), scheme=scheme_)
            return _cached(("gs", emulator), lambda: pafs.GcsFileSystem(**options)), rest.rstrip("/")
        if scheme in ("abfs", "abfss", "az"):
            return _azure(uri)
        if scheme == "file":
            return pafs.LocalFileSystem(), "/" + rest.lstrip("/")
    except StorageError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError or ImportError depending on the scheme
        raise StorageError(f"{uri}: cannot open this location ({_one_line(exc)})") from None
    raise StorageError(f"{uri}: cannot open this location (unknown scheme; use a local path or "
                       f"{', '.join(s + '://' for s in SCHEMES)})")


def bounded(uri: str, call: Callable[[], T], *, what: str = "no answer") -> T:
    """Run ``call`` with the configured timeout; past it, a StorageError naming ``uri``.

    The call runs in a daemon thread, so a stuck network call cannot keep the process alive.
    """
    timeout = _settings.timeout
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="storage-call", daemon=True).start()
    if not done.wait(timeout):
        raise StorageError(f"{uri}: {what} from the object store within {timeout:g} s "
                           "(is it reachable? [storage] timeout sets the limit)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _cached(key: tuple, make: Callable[[], pafs.FileSystem]) -> pafs.FileSystem:
    with _cache_lock:
        fs = _cache.get(key)
        if fs is None:
            fs = _cache[key] = make()
        return fs


def _s3(bucket: str, uri: str) -> pafs.FileSystem:
    endpoint = s3_endpoint()
    timeout = _settings.timeout
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region is None and endpoint is None:
        # the bucket's region is asked from AWS: a network call, bounded like every first call
        region = bounded(uri, lambda: pafs.resolve_s3_region(bucket), what="no region")
    options: dict[str, Any] = {
        "region": region or "us-east-1",
        "connect_timeout": timeout,
        "request_timeout": timeout,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        if not host:
            scheme, host = "https", endpoint
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        options["force_virtual_addressing"] = False
    return _cached(("s3", endpoint, options["region"]), lambda: pafs.S3FileSystem(**options))


def _azure(uri: str) -> tuple[pafs.FileSystem, str]:
    """``abfs://container@account.dfs.core.windows.net/path`` or ``abfs://container/path``.

    The account comes from the URI or ``AZURE_STORAGE_ACCOUNT_NAME``; credentials from Azure's
    default chain (environment, managed identity, CLI login).
    """
    rest = uri.split("://", 1)[1]
    container_part, _, path = rest.partition("/")
    container, _, host = container_part.partition("@")
    account = host.split(".", 1)[0] if host else os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    if not account:
        raise StorageError(f"{uri}: no storage account: write abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH "
                           "or set AZURE_STORAGE_ACCOUNT_NAME")
    options: dict[str, Any] = {"account_name": account}
    if key := os.environ.get("AZURE_STORAGE_ACCOUNT_KEY"):  # else Azure's default credential chain
        options["account_key"] = key
    endpoint = os.environ.get("AZURE_STORAGE_ENDPOINT")  # Azurite and other emulators
    if endpoint:
        scheme, _, hostport = endpoint.partition("://")
        options.update(blob_storage_authority=hostport, dfs_storage_authority=hostport, blob_storage_scheme=scheme,
                       dfs_storage_scheme=scheme)
    fs = _cached(("abfs", account, endpoint), lambda: pafs.AzureFileSystem(**options))
    return fs, posixpath.join(container, path).rstrip("/")


def _one_line(error: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- a folder on any filesystem ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Location:
    """A file or folder on an object store, addressed like a path (``loc / "labels"``)."""

    fs: pafs.FileSystem
    path: str  # on ``fs``: "bucket/key" for object stores
    uri: str  # what the user sees

    @classmethod
    def parse(cls, uri: str) -> Location:
        fs, path = filesystem(uri)
        return cls(fs, path, uri.rstrip("/"))

    def __truediv__(self, name: str) -> Location:
        return Location(self.fs, posixpath.join(self.path, name), f"{self.uri}/{name}")

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def read_bytes(self) -> bytes | None:
        """The whole object, or None when there is none."""
        try:
            with self.fs.open_input_stream(self.path) as stream:
                return stream.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{self.uri}: cannot read ({_one_line(exc)})") from None

    def write_bytes(self, data: bytes) -> None:
        """Replace the object in one upload: readers see the old object or the new one, never a part."""
        try:
            try:
                stream = self.fs.open_output_stream(self.path)
            except FileNotFoundError:  # a filesystem with real folders (file://): make the parent
                self.fs.create_dir(posixpath.dirname(self.path), recursive=True)
                stream = self.fs.open_output_stream(self.path)
            with stream:
                stream.write(data)
        except OSError as exc:
            raise StorageError(f"{self.uri}: cannot write ({_one_line(exc)})") from None

    def delete(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"{self.uri}: cannot delete ({_one_line(exc)})") from None

    def files(self) -> list[Location]:
        """Every file under this folder, sorted (none when the folder does not exist)."""
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise StorageError(f"{self.uri}: cannot list ({_one_line(exc)})") from None
        base = self.path.rstrip("/") + "/"
        return sorted(
            (Location(self.fs, i.path, self.uri + "/" + i.path[len(base):])
             for i in infos if i.type == pafs.FileType.File and i.path.startswith(base)),
            key=lambda loc: loc.path,
        )

    def glob(self, pattern: str) -> list[Location]:
        """Files directly in this folder whose name matches ``pattern``."""
        base = self.path.rstrip("/") + "/"
        return [f for f in self.files() if "/" not in f.path[len(base):] and fnmatch.fnmatch(f.name, pattern)]

    def probe(self) -> None:
        """One bounded call that proves the store answers (the folder need not exist)."""
        try:
            bounded(self.uri, lambda: self.fs.get_file_info(self.path))
        except OSError as exc:
            raise StorageError(f"{self.uri}: cannot reach the object store ({_one_line(exc)})") from None
