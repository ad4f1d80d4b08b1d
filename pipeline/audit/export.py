"""A training set from a finished run: chat-format JSONL or flat Parquet, plus rows to review.

The shards hold no texts, so the input is read again and joined on the row number, one shard at a
time (both are in row order): memory stays bounded whatever the size. Each example carries the
exact system message the run sent (`render_system`), the content as sent (`normalise` +
`neutralise`) and the verdict in the run's output format.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import UserError
from pipeline.core.labels import COLUMN_NAMES
from pipeline.core.records import UNSENT_STATUSES, OutputFormat, Policy
from pipeline.output.reader import OutputReader, open_for_reading
from pipeline.plan.policies import PolicyError, load_policy
from pipeline.plan.prompt import neutralise, normalise, render_system
from pipeline.readers import InputError, open_inputs

_CONFIDENCE_WEIGHT = {"low": 2.0, "medium": 1.0}


class ExportError(UserError):
    """A one-line user mistake: not a finished run, a changed input or policy."""


@dataclass(slots=True)
class Example:
    """One ok label with its content, ready to be written."""

    label: dict[str, Any]
    text: str
    system: str


def verdict_text(label: dict[str, Any], output_format: str) -> str:
    """The verdict as the model answers in the run's output format (in the policy's own: its answer).

    >>> verdict_text({"violation": 1, "category": "SP2"}, "category")
    '{"violation":1,"policy_category":"SP2"}'
    """
    if output_format == OutputFormat.POLICY:
        return label.get("raw_output") or label["category"] or ""
    if output_format == OutputFormat.BINARY:
        return str(label["violation"])
    answer: dict[str, Any] = {"violation": label["violation"], "policy_category": label["category"]}
    if output_format == OutputFormat.RATIONALE:
        answer.update(rule_ids=list(label["rule_ids"] or []), confidence=label["confidence"],
                      rationale=label["rationale"])
    return orjson.dumps(answer).decode()


#: what each chat record's ``metadata`` names: where the label came from
METADATA = ("id", "policy", "policy_version", "output_format", "model", "served_model", "run_id", "fingerprint",
            "confidence")
#: the shards' provenance columns the flat export keeps
PROVENANCE = ("output_format", "reasoning_effort", "served_model", "source", "run_id", "fingerprint")


def chat_example(example: Example, *, metadata: bool = True) -> dict[str, Any]:
    """One chat record: system, user and assistant messages, and (unless not wanted) the label's provenance."""
    label = example.label
    record: dict[str, Any] = {"messages": [
        {"role": "system", "content": example.system},
        {"role": "user", "content": example.text},
        {"role": "assistant", "content": verdict_text(label, label["output_format"])},
    ]}
    if metadata:
        record["metadata"] = {key: label.get(key) for key in METADATA}
    return record


def flat_row(example: Example, extra: list[str]) -> dict[str, Any]:
    label = example.label
    return {"id": label["id"], "text": example.text, "policy": label["policy"], "violation": label["violation"],
            "category": label["category"], "rule_ids": label["rule_ids"], "confidence": label["confidence"],
            "rationale": label["rationale"], "policy_version": label["policy_version"], "model": label["model"],
            **{c: label.get(c) for c in PROVENANCE}, **{c: label[c] for c in extra}}


def examples(out: str | Path | OutputReader, *, policies: dict[str, Policy], inputs: list[str] | None,
             text_column: str, id_column: str | None,
             partial: bool = False) -> Iterator[tuple[Example, list[str]]]:
    """Every ok label of `out`, in row order, with its content: (example, extra label columns).

    Raises ExportError for a directory whose run did not finish, unless ``partial``.
    """
    with open_for_reading(out) as folder:
        yield from _examples(folder, policies=policies, inputs=inputs, text_column=text_column,
                             id_column=id_column, partial=partial)


def _examples(out: OutputReader, *, policies: dict[str, Policy], inputs: list[str] | None, text_column: str,
              id_column: str | None, partial: bool) -> Iterator[tuple[Example, list[str]]]:
    shards = out.shard_files()
    if not shards:
        raise ExportError(f"{out}: no label shards in {out.where('labels')} (is it a run's output directory?)")
    manifest = _manifest(out)
    recorded = manifest.get("description") or {}
    # the policies as the run read them (kept in the manifest); files passed with --policy come first
    policies = {**{name: Policy(name, p["text"]) for name, p in recorded.get("policies", {}).items()}, **policies}
    files = inputs or _input_files(shards)
    source = open_inputs(files, text_column=text_column, id_column=id_column)
    expected = manifest.get("identity", {}).get("input")
    if expected and source.identity() != expected and id_column is None:
        with contextlib.suppress(InputError):  # the run may have named the "id" column explicitly
            source = open_inputs(files, text_column=text_column, id_column="id")
    if expected and source.identity() != expected:
        raise ExportError(f"{out}: the input is not the one the run read (files, sizes or --text-column/--id-column "
                          "differ); pass the run's --input, --text-column and --id-column")
    if not partial and not manifest.get("finished"):
        labelled, total = labelled_rows(shards), _total_rows(manifest, source.total_rows)
        raise ExportError(f"{out}: the run did not finish: {labelled:,} of {total} rows labelled; finish it "
                          "(rerun the same command) or pass --partial to export what is there")
    systems: dict[tuple[str, str], str] = {}
    rows = _numbered_texts(source)
    current: tuple[int, str, str | None] = (-1, "", None)
    for shard in shards:
        frame = pl.read_parquet(shard).sort("row_number", maintain_order=True)
        extra = [c for c in frame.columns if c not in COLUMN_NAMES]
        for label in frame.iter_rows(named=True):
            number = label["row_number"]
            while current[0] < number:
                current = next(rows, (1 << 62, "", None))
            if current[0] != number or current[1] != label["id"]:
                raise ExportError(f"{out}: row {number} (id {label['id']!r}) is not in the input as the run read it")
            if label["status"] != "ok" or label["violation"] is None:
                continue
            key = (label["policy"], label["output_format"])
            if key not in systems:
                systems[key] = render_system(_policy(policies, label), OutputFormat(label["output_format"]))
            yield Example(label, neutralise(normalise(current[2] or "")), systems[key]), extra


def kept_fields(out: str | Path | OutputReader) -> list[pa.Field]:
    """The input columns the run kept (``--keep-columns``), with their types in the shards."""
    with open_for_reading(out) as folder:
        shards = folder.shard_files()
        if not shards:
            return []
        return [f for f in pq.read_schema(shards[0]) if f.name not in COLUMN_NAMES]


def labelled_rows(shards: list[Path]) -> int:
    """Input rows in ``shards`` whose every label has an answer or a final status (none left unsent)."""
    unsent = [s.value for s in UNSENT_STATUSES]
    frame = (pl.scan_parquet(shards).group_by("row_number")
             .agg(pl.col("status").is_in(unsent).any().alias("unsent")).filter(~pl.col("unsent")).collect())
    return frame.height


def _total_rows(manifest: dict[str, Any], input_rows: int | None) -> str:
    """The job's input rows as text ("?" when the input cannot be counted without reading it)."""
    limit = manifest.get("identity", {}).get("limit")
    if input_rows is None:
        return f"{limit:,}" if limit is not None else "?"
    return f"{input_rows if limit is None else min(input_rows, limit):,}"


def _numbered_texts(source: Any) -> Iterator[tuple[int, str, str | None]]:
    number = 0
    for batch in source.batches(batch_size=4096):
        for row_id, text in zip(batch.ids, batch.texts, strict=True):
            yield number, row_id, text
            number += 1


def _manifest(out: OutputReader) -> dict[str, Any]:
    manifest = out.read_json("manifest.json")
    if not isinstance(manifest, dict):
        raise ExportError(f"{out}: no readable manifest.json (is it a run's output directory?)")
    return manifest


def _input_files(shards: list[Path]) -> list[str]:
    files = pl.scan_parquet(shards).select(pl.col("input_file").unique()).collect().get_column("input_file")
    return sorted(f for f in files.to_list() if f)


def _policy(policies: dict[str, Policy], label: dict[str, Any]) -> Policy:
    name, version = label["policy"], label["policy_version"]
    policy = policies.get(name)
    if policy is None:
        try:
            policy = policies[name] = load_policy(name)
        except PolicyError:
            raise ExportError(f"policy {name!r} is not a shipped policy: pass the file the run used with "
                              "--policy FILE") from None
    if policy.version != version:
        raise ExportError(f"policy {name!r} changed since the run (version {policy.version}, the labels have "
                          f"{version}): pass the file the run used with --policy FILE")
    return policy


class ReviewQueue:
    """The N labels most worth a human look, kept in a bounded heap while the export streams.

    Score: low confidence (2) or medium (1), +0.5 when the row's policies disagree (one flags it,
    another not), +3 when the verdict disagrees with a gold label.
    """

    def __init__(self, size: int, gold: dict[str, int] | None = None) -> None:
        self.size = size
        self.gold = gold
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._row: list[tuple[Example, float, list[str]]] = []
        self._row_number: int | None = None
        self._seen = 0

    def add(self, example: Example) -> None:
        """Add the next ok label (labels come in row order)."""
        label = example.label
        if label["row_number"] != self._row_number:
            self._close_row()
            self._row_number = label["row_number"]
        reasons, score = [], 0.0
        weight = _CONFIDENCE_WEIGHT.get(label["confidence"] or "")
        if weight:
            score += weight
            reasons.append(f"{label['confidence']} confidence")
        gold = self.gold.get(label["id"]) if self.gold is not None else None
        if gold is not None and gold != label["violation"]:
            score += 3
            reasons.append(f"gold label {gold}")
        self._row.append((example, score, reasons))

    def _close_row(self) -> None:
        verdicts = {e.label["violation"] for e, _, _ in self._row}
        for example, score, reasons in self._row:
            if len(verdicts) > 1:
                score += 0.5
                reasons = [*reasons, "policies disagree"]
            if score > 0:
                self._push(score, example, reasons)
        self._row = []

    def _push(self, score: float, example: Example, reasons: list[str]) -> None:
        label = example.label
        item = {"id": label["id"], "policy": label["policy"], "text": example.text, "violation": label["violation"],
                "category": label["category"], "confidence": label["confidence"], "rationale": label["rationale"],
                "score": score, "reasons": reasons, "row_number": label["row_number"]}
        self._seen += 1
        entry = (score, -self._seen, item)  # ties: the earlier row first
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif entry > self._heap[0]:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[dict[str, Any]]:
        self._close_row()
        return [item for _, _, item in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]


def recorded_columns(out: str | Path | OutputReader) -> tuple[str, str | None] | None:
    """The run's (text, id) input columns as its manifest records them; None for a folder from before that."""
    with open_for_reading(out) as folder:
        manifest = folder.read_json("manifest.json")
    recorded = manifest.get("description") if isinstance(manifest, dict) else None
    if not isinstance(recorded, dict) or "text_column" not in recorded:
        return None
    return recorded["text_column"], recorded.get("id_column")
