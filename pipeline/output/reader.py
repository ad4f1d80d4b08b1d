"""A run's output folder opened for reading, wherever it is: a local path, ``file://`` or an object store.

`moderate report`, `eval`, `export` and `estimate --calibrate` (and their library functions) read a
folder through this one place. The shards read are those the manifest lists (the committed ones: a
killed run's uploads and shards replaced since are not), or every ``labels/part-*.parquet`` of a
folder without a readable manifest. On an object store they are downloaded once into a temporary
folder, removed when the reader is closed, so every reader works on local Parquet files. Small files
(manifest, cost report, eval.json) are read whole; what the commands write back (eval.json,
report.html) replaces the file whole: a rename on a disk, one upload on an object store.

>>> with open_for_reading("out/run") as folder:  # doctest: +SKIP
...     frame = pl.read_parquet(folder.shard_files())
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.fs as pafs

from pipeline.core.storage import Location, StorageError, is_uri
from pipeline.output.errors import OutputDirError
from pipeline.output.outdir import atomic_write_text

__all__ = ["OutputReader", "open_for_reading"]

#: how often the manifest is read again when a shard it lists has gone (a run replaced it meanwhile)
ATTEMPTS = 5
_CHUNK = 1 << 20


class OutputReader:
    """Read access to one output folder; close it (or use it as a context manager) to drop downloads."""

    def __init__(self, out: str | Path) -> None:
        text = str(out)
        if is_uri(text) and not text.startswith("file://"):
            self.location: Location | None = Location.parse(text)
            self.root: Path | None = None
            self.uri = self.location.uri
            self.location.probe()  # an unreachable store fails here, within [storage] timeout, naming the URI
        else:
            self.location = None
            self.root = Path(text[len("file://"):] if text.startswith("file://") else out)
            self.uri = str(self.root)
        self._shards: list[Path] | None = None
        self._downloads: Path | None = None

    @property
    def local(self) -> bool:
        return self.location is None

    def __str__(self) -> str:
        return self.uri

    def __enter__(self) -> OutputReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._downloads is not None:
            shutil.rmtree(self._downloads, ignore_errors=True)
            self._downloads = None
            self._shards = None

    def where(self, name: str) -> str:
        """How a file of the folder is named to the user (``s3://bucket/out/eval.json``)."""
        return f"{self.uri}/{name}"

    # -- small files -------------------------------------------------------------------------
    def read_bytes(self, name: str) -> bytes | None:
        """A file of the folder (``cost_report.json``), or None when there is none.

        Other faults: OSError on a disk, `StorageError` (one line, the URI) on an object store.
        """
        if self.location is not None:
            return (self.location / name).read_bytes()
        try:
            return (self.root / name).read_bytes()  # type: ignore[operator]
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_json(self, name: str) -> Any:
        """A JSON file of the folder; None when it is missing or unreadable."""
        with contextlib.suppress(OSError, StorageError, orjson.JSONDecodeError):
            raw = self.read_bytes(name)
            return None if raw is None else orjson.loads(raw)
        return None

    def read_cost_report(self, *, missing: str) -> dict[str, Any]:
        """``cost_report.json`` as a dict; `OutputDirError` (one line) when it is absent, unreadable or not an
        object. ``missing``: what to say after "no cost_report.json" (why the command needs one)."""
        name = "cost_report.json"
        try:
            raw = self.read_bytes(name)
            report = None if raw is None else orjson.loads(raw)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise OutputDirError(f"{self.where(name)}: cannot read ({exc})") from None
        if raw is None:
            raise OutputDirError(f"{self}: no {name} ({missing})")
        if not isinstance(report, dict):
            raise OutputDirError(f"{self.where(name)}: cannot read (not a JSON object)")
        return report

    def exists(self, name: str) -> bool:
        if self.location is not None:
            try:
                info = self.location.fs.get_file_info((self.location / name).path)
            except OSError:
                return False
            return info.type == pafs.FileType.File
        return (self.root / name).is_file()  # type: ignore[operator]

    def write_text(self, name: str, text: str) -> str:
        """Replace a file of the folder whole (readers see the old file or the new one); returns its name."""
        if self.location is not None:
            from pipeline.output.remote import upload_whole

            upload_whole(self.location / name, text.encode())
        else:
            atomic_write_text(self.root / name, text)  # type: ignore[operator]
        return self.where(name)

    def store_path(self) -> Path | None:
        """The run's result store when it is a file on this machine (the manifest's, else ``OUT/store.sqlite``)."""
        manifest = self.read_json("manifest.json")
        store = manifest.get("store") if isinstance(manifest, dict) else None
        if isinstance(store, str) and store and store != "none" and not is_uri(store) and Path(store).is_file():
            return Path(store)
        own = self.root / "store.sqlite" if self.root is not None else None
        return own if own is not None and own.is_file() else None

    # -- shards ------------------------------------------------------------------------------
    def shard_files(self) -> list[Path]:
        """The label shards as local files, in shard order (downloaded once from an object store)."""
        if self._shards is None:
            self._shards = self._local_shards() if self.location is None else self._download()
        return self._shards

    def _listed(self) -> list[tuple[str, str | None]] | None:
        """(file, sha256) of each shard the manifest lists (``labels/part-00000.parquet``); None without a
        readable manifest."""
        manifest = self.read_json("manifest.json")
        shards = manifest.get("shards") if isinstance(manifest, dict) else None
        if not isinstance(shards, dict):
            return None
        files = []
        for _, entry in sorted(shards.items()):
            file = entry.get("file") if isinstance(entry, dict) else None
            folder, _, name = str(file).rpartition("/")
            if folder != "labels" or not name.endswith(".parquet") or name.startswith("."):
                raise OutputDirError(f"{self.where('manifest.json')}: lists {file!r} as a shard "
                                     "(shards are labels/NAME.parquet); is it a run's output folder?")
            digest = entry.get("sha256")
            files.append((str(file), digest if isinstance(digest, str) and digest else None))
        return files

    def _local_shards(self) -> list[Path]:
        root: Path = self.root  # type: ignore[assignment]
        listed = self._listed()
        if listed is None:
            return sorted((root / "labels").glob("part-*.parquet"))
        missing = [f for f, _ in listed if not (root / f).is_file()]
        if missing:
            raise OutputDirError(f"{self.where(missing[0])}: listed in the manifest but not in the folder")
        return [root / f for f, _ in listed]

    def _download(self) -> list[Path]:
        """Copy the listed shards into a temporary folder; a shard that went away means a run replaced it:
        the manifest is read again (`ATTEMPTS` times) before that is an error."""
        location: Location = self.location  # type: ignore[assignment]
        self._downloads = Path(tempfile.mkdtemp(prefix="moderate-shards-"))
        gone = ""
        for _ in range(ATTEMPTS):
            listed = self._listed()
            if listed is None:
                listed = [(f"labels/{s.name}", None) for s in (location / "labels").glob("part-*.parquet")]
            paths: list[Path] = []
            for number, (file, expected) in enumerate(listed):
                target = self._downloads / f"{number:05d}-{posixpath.basename(file)}"
                digest = _copy(location / file, target)
                if digest is None:
                    gone = file
                    break
                if expected is not None and digest != expected:
                    raise OutputDirError(f"{self.where(file)}: not the shard the manifest lists (its SHA-256 "
                                         "differs); was it changed after the run wrote it?")
                paths.append(target)
            else:
                return paths
        raise OutputDirError(f"{self.where(gone)}: listed in the manifest but not in the store (is a run "
                             "rewriting this folder? read it again when the run has ended)")


def _copy(source: Location, target: Path) -> str | None:
    """Stream one object to a local file; its SHA-256, or None when there is no such object."""
    digest = hashlib.sha256()
    try:
        with source.fs.open_input_stream(source.path) as stream, open(target, "wb") as handle:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                handle.write(chunk)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # S3 answers a GET of an object deleted since pyarrow looked it up with an error of its own
        if _gone(source):
            return None
        raise StorageError(f"{source.uri}: cannot read ({' '.join(str(exc).split())[:300]})") from None
    return digest.hexdigest()


def _gone(source: Location) -> bool:
    try:
        return source.fs.get_file_info(source.path).type == pafs.FileType.NotFound
    except OSError:
        return False


@contextlib.contextmanager
def open_for_reading(out: str | Path | OutputReader) -> Iterator[OutputReader]:
    """The folder at ``out`` for reading; a reader passed in is used as it is (its owner closes it)."""
    if isinstance(out, OutputReader):
        yield out
        return
    reader = OutputReader(out)
    try:
        yield reader
    finally:
        reader.close()
