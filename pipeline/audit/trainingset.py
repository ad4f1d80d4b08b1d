"""Write a training set file from a run's ok labels: chat-format JSON Lines or flat Parquet, plus the
labels most worth a human look (``moderate export``; ``pipeline.export``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audit.evaluate import read_truth
from pipeline.audit.export import ExportError, ReviewQueue, chat_example, examples, flat_row, kept_fields
from pipeline.output.outfiles import open_output, output_target
from pipeline.output.reader import open_for_reading
from pipeline.plan.policies import load_policies

__all__ = ["FORMATS", "export"]


FORMATS = ("chat-jsonl", "parquet")
FLUSH_ROWS = 10_000
#: the flat Parquet's own columns; columns the shards carry besides the label schema follow them.
FLAT_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("policy", pa.string()), ("violation", pa.int8()),
    ("category", pa.string()), ("rule_ids", pa.list_(pa.string())), ("confidence", pa.string()),
    ("rationale", pa.string()), ("policy_version", pa.string()), ("model", pa.string()),
    # provenance, as the shards have it
    ("output_format", pa.string()), ("reasoning_effort", pa.string()), ("served_model", pa.string()),
    ("source", pa.string()), ("run_id", pa.string()), ("fingerprint", pa.string()),
])

def export(out: str | Path, *, fmt: str, output: Path, review: int | None = None, review_output: str | None = None,
           gold: str | None = None, gold_column: str | None = None, gold_id_column: str | None = None,
           inputs: list[str] | None = None, text_column: str = "text", id_column: str | None = None,
           policy_files: list[str] | None = None, partial: bool = False, metadata: bool = True) -> dict[str, Any]:
    """Write the training set (and the review file); returns counts and paths.

    ``out``: a local folder or an object-store URI (``s3://bucket/out``). ``metadata``: each chat
    record carries the label's provenance under ``metadata`` (off for fine-tuning APIs that refuse
    keys besides ``messages``).
    """
    if review is not None and review < 1:
        raise ExportError("--review must be at least 1")
    if gold and not gold_column:
        raise ExportError("--gold needs --gold-column (its 0/1 column)")
    policies = {p.name: p for p in load_policies(policy_files or [])}
    queue = None
    if review:
        truth = None
        if gold:
            frame = read_truth(gold, id_column=gold_id_column, label_column=gold_column or "")
            truth = dict(frame.drop_nulls("truth").iter_rows())
        queue = ReviewQueue(review, truth)
    review_path = _review_path(output, review_output) if queue is not None else None
    count = 0
    with open_for_reading(out) as folder, open_output(output, flag="--output") as handle, \
            _Writer(handle, fmt, kept_fields(folder)) as writer:
        for example, extra in examples(folder, policies=policies, inputs=inputs, text_column=text_column,
                                       id_column=id_column, partial=partial):
            writer.add(chat_example(example, metadata=metadata) if fmt == "chat-jsonl" else flat_row(example, extra))
            if queue is not None:
                queue.add(example)
            count += 1
    if queue is not None and review_path is not None:
        with open_output(review_path, flag="--review-output") as handle:
            handle.write(b"".join(orjson.dumps(item) + b"\n" for item in queue.items()))
    return {"examples": count, "output": str(output), "review": len(queue.items()) if queue else 0,
            "review_output": str(review_path) if review_path else None}


def _review_path(output: Path, review_output: str | None) -> Path:
    """Where the review queue goes (checked before anything is written)."""
    if review_output:
        path = Path(review_output)
    elif output_target(output, flag="--output").is_file() or not output.exists():
        path = output.with_name(output.stem + ".review.jsonl")
    else:  # a device or a stream has no folder to put a file beside it
        raise ExportError(f"--output {output} is not a regular file: name the review file with --review-output")
    output_target(path, flag="--review-output")
    return path


class _Writer:
    """Rows to JSON Lines, or to Parquet in row groups of `FLUSH_ROWS`, on an open binary file."""

    def __init__(self, handle: BinaryIO, fmt: str, kept: list[pa.Field] | None = None) -> None:
        self.handle = handle
        self.fmt = fmt
        #: the kept input columns with their shard types (others are inferred from the values)
        self.kept = {f.name: f for f in kept or []}
        self._rows: list[dict[str, Any]] = []
        self._parquet: pq.ParquetWriter | None = None
        self._file: BinaryIO | None = None

    def __enter__(self) -> _Writer:
        if self.fmt == "chat-jsonl":
            self._file = self.handle
        return self

    def add(self, row: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(orjson.dumps(row) + b"\n")
            return
        self._rows.append(row)
        if len(self._rows) >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._parquet is None:
            extra = [name for name in self._rows[0] if name not in FLAT_SCHEMA.names]
            inferred = pa.Table.from_pylist([{k: r[k] for k in extra} for r in self._rows]).schema if extra else []
            fields = [self.kept.get(f.name) or pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type)
                      for f in inferred]
            self._parquet = pq.ParquetWriter(self.handle, pa.schema([*FLAT_SCHEMA, *fields]), compression="zstd")
        self._parquet.write_table(pa.Table.from_pylist(self._rows, schema=self._parquet.schema))
        self._rows = []

    def __exit__(self, failed: type[BaseException] | None, *exc: object) -> None:
        if self._file is not None:
            return
        if failed is not None:  # the file is dropped unfinished; closed now, not when collected
            with contextlib.suppress(Exception):
                if self._parquet is not None:
                    self._parquet.close()
            return
        self._flush()
        if self._parquet is None:  # no example at all: an empty file with the columns
            self._parquet = pq.ParquetWriter(self.handle, pa.schema([*FLAT_SCHEMA, *self.kept.values()]))
        self._parquet.close()
