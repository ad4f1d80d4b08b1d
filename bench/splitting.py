"""Part of benchmark "ray": bytes read to split a large JSON Lines file into shards (no Ray, no network).

A file of synthetic comments (about 200 bytes a line) is opened as the Ray driver opens it (rows
counted and seek points noted in one pass), then each of 16 shards reads exactly its rows as a
Ray actor does (`InputSet.batches` from the shard's first row, up to its last). Every byte read
from the file is counted, by the index pass and by the shard readers apart. Reading every shard
from the file's start (as before seek points) would read (k+1)/16 of the file for shard k: 8.5x
in all for 16 shards, given here as computed, not run.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from bench.common import OUT


class _Counting:
    """A pyarrow stream that counts the bytes read from it."""

    def __init__(self, stream: Any, count: Callable[[int], None]) -> None:
        self._stream, self._count = stream, count

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._count(len(data))
        return data

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()


def _write(size: int) -> tuple[Any, int]:
    path = OUT / f"split-{size >> 20}mib.jsonl"
    if not path.exists() or path.stat().st_size < size:
        words = ["great", "photo", "buy", "now", "click", "here", "free", "money", "see", "you", "friday", "vermin"]
        rng = random.Random(7)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            written, i = 0, 0
            while written < size:
                text = " ".join(rng.choices(words, k=28))
                line = f'{{"id": "c{i}", "text": "{text}"}}\n'
                f.write(line)
                written += len(line)
                i += 1
    return path, path.stat().st_size


def run(*, size: int, shards: int) -> dict[str, Any]:
    from pipeline.readers import inputs as inputs_module
    from pipeline.readers import jsonl, open_inputs

    path, size = _write(size)
    read = {"index": 0, "shards": 0}
    phase = ["index"]
    plain_open, seek_open = jsonl.open_stream, jsonl._open_at

    def count(n: int) -> None:
        read[phase[0]] += n

    jsonl.open_stream = lambda f: _Counting(plain_open(f), count)
    jsonl._open_at = lambda f, offset: _Counting(seek_open(f, offset), count)
    budget = inputs_module.COUNT_JSONL_BYTES
    inputs_module.COUNT_JSONL_BYTES = 0  # as for a file past the open-time budget: the Ray driver indexes it
    try:
        inputs = open_inputs([str(path)], text_column="text")
        read["index"] = 0  # the first object read to check the columns
        inputs.index_rows()
        rows = inputs.total_rows or 0
        shard_rows = -(-rows // shards)
        phase[0] = "shards"
        for k in range(shards):
            part = copy.copy(inputs)
            part.limit = (k + 1) * shard_rows
            got = sum(len(b.ids) for b in part.batches(batch_size=4096, skip_rows=k * shard_rows))
            assert got == min(shard_rows, rows - k * shard_rows), (k, got)
    finally:
        jsonl.open_stream, jsonl._open_at = plain_open, seek_open
        inputs_module.COUNT_JSONL_BYTES = budget
    return {"bytes": size, "rows": rows, "shards": shards, "index_read_per_byte": read["index"] / size,
            "shards_read_per_byte": read["shards"] / size,
            "unsplit_read_per_byte": sum(k + 1 for k in range(shards)) / shards}
