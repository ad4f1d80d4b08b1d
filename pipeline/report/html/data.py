"""What the HTML report shows, read from an output directory: the shards (polars, lazily, so memory
stays flat), `cost_report.json`, `eval.json` when present, and the answer times in the store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.core.errors import UserError
from pipeline.core.intervals import wilson
from pipeline.output.reader import OutputReader, open_for_reading
from pipeline.report.html import insights
from pipeline.report.html.truth import truth_details

TOP_ROWS = 10
SAMPLE_ROWS = 20
LATENCY_BINS = 30
THROUGHPUT_POINTS = 60
#: input texts are shown beside sampled rows when the inputs are local files of at most this size.
TEXT_LOOKUP_BYTES = 64 << 20


class ReportError(UserError):
    """The directory holds no finished report (one line)."""


def collect(out: str | Path | OutputReader, *, text_column: str | None = "text",
            id_column: str | None = None) -> dict[str, Any]:
    """What the page shows, from a local folder or one on an object store."""
    with open_for_reading(out) as folder:
        return _collect(folder, text_column=text_column, id_column=id_column)


def _collect(out: OutputReader, *, text_column: str | None, id_column: str | None) -> dict[str, Any]:
    cost = out.read_cost_report(missing="a run writes it when it ends")
    files = out.shard_files()
    data: dict[str, Any] = {"cost": cost, "out": str(out), "eval": out.read_json("eval.json"),
                            "columns": {"text": text_column, "id": id_column}}
    if not files:
        data.update(policies=[], statuses={}, errors=[], latency=[], expensive=[], flagged=[],
                    throughput=_throughput(out, cost, None), rules=[], co_flags=[], breakdown=None, nights=[],
                    lengths=[], browser=[], truth={})
        return data
    labels = pl.scan_parquet(files)
    data["policies"] = _policies(labels)
    data["statuses"] = dict(sorted(labels.group_by("status").len().collect().iter_rows()))
    # ties broken by the other columns, so that a page is the same whichever order the shards are scanned in
    data["errors"] = (labels.filter(pl.col("status") != "ok").group_by("status", "error").len()
                      .sort(["len", "status", "error"], descending=[True, False, False], nulls_last=True)
                      .head(TOP_ROWS).collect().rows())
    api = labels.filter(pl.col("source") == "api")
    data["latency"] = _histogram(api.select("latency_ms").collect().get_column("latency_ms"))
    keep = ["id", "policy", "status", "violation", "category", "confidence", "rationale", "prompt_tokens",
            "cached_prompt_tokens", "completion_tokens", "cost_usd", "row_number", "input_file"]
    data["expensive"] = (api.sort(["cost_usd", "row_number", "policy"], descending=[True, False, False])
                         .head(TOP_ROWS).select(keep).collect().to_dicts())
    flagged = (labels.filter((pl.col("status") == "ok") & (pl.col("violation") == 1))
               .with_columns(_pick=pl.col("row_number").hash(seed=7)).sort("_pick", "policy").head(SAMPLE_ROWS))
    data["flagged"] = flagged.select(keep).collect().to_dicts()
    data["rules"] = insights.rule_counts(labels)
    data["co_flags"] = insights.co_flags(labels)
    gold = {p.get("label_column") for p in ((data["eval"] or {}).get("policies") or {}).values()}
    data["breakdown"] = insights.breakdown(labels, skip=gold)
    data["nights"] = insights.nightly_rates(out, [p["policy"] for p in data["policies"]])
    data["lengths"] = insights.answer_lengths(api)
    data["browser"] = insights.browser_rows(labels, sum(p["labels"] for p in data["policies"]))
    data["truth"] = truth_details(labels, data["eval"])
    mistakes = [r for t in data["truth"].values() for r in t["false_positives"] + t["false_negatives"]]
    if text_column:
        _attach_texts(labels, data["expensive"] + data["flagged"] + data["browser"] + mistakes, text_column,
                      id_column)
    data["throughput"] = _throughput(out, cost, api)
    return data


def _policies(labels: pl.LazyFrame) -> list[dict[str, Any]]:
    by_policy = (labels.group_by("policy").agg(
        labels=pl.len(), ok=(pl.col("status") == "ok").sum(),
        violations=((pl.col("status") == "ok") & (pl.col("violation") == 1)).sum()).sort("policy").collect())
    cats = (labels.filter((pl.col("status") == "ok") & (pl.col("violation") == 1))
            .group_by("policy", "category").len().sort("policy", "len", descending=[False, True]).collect())
    result = []
    for row in by_policy.iter_rows(named=True):
        ok, hits = row["ok"], row["violations"]
        categories = [{"category": c, "count": n, "rate": n / ok if ok else None, "ci": wilson(n, ok)}
                      for p, c, n in cats.iter_rows() if p == row["policy"]]
        result.append({"policy": row["policy"], "labels": row["labels"], "ok": ok, "violations": hits,
                       "rate": hits / ok if ok else None, "ci": wilson(hits, ok), "categories": categories})
    return result


def _histogram(values: pl.Series) -> list[tuple[float, float, int]]:
    values = values.drop_nulls()
    if values.is_empty():
        return []
    low, high = float(values.min()), float(values.quantile(0.99) or values.max())
    if high <= low:
        return [(low, low, values.len())]
    width = (high - low) / LATENCY_BINS
    index = ((values - low) / width).floor().clip(0, LATENCY_BINS - 1).cast(pl.Int32)
    counts = dict(index.value_counts().iter_rows())
    return [(low + i * width, low + (i + 1) * width, int(counts.get(i, 0))) for i in range(LATENCY_BINS)]


def _throughput(out: OutputReader, cost: dict[str, Any], api: pl.LazyFrame | None) -> dict[str, Any]:
    """Answers per second over time, from the store's answer times; else each run's average."""
    run_ids = [r["run_id"] for r in cost.get("runs", [])]
    times = _answer_times(out.store_path(), run_ids)
    if len(times) >= 2:
        start, end = times[0], times[-1]
        width = max((end - start) / THROUGHPUT_POINTS, 0.05)
        counts: dict[int, int] = {}
        for t in times:
            counts[int((t - start) / width)] = counts.get(int((t - start) / width), 0) + 1
        points = [((i + 0.5) * width, counts.get(i, 0) / width) for i in range(max(counts) + 1)]
        return {"points": points, "source": "answers per second, from the times the store committed them"}
    points, clock = [], 0.0
    for run in cost.get("runs", []):
        elapsed = run.get("elapsed_s") or 0.0
        if elapsed > 0:
            rate = (run.get("labels") or 0) / elapsed
            points += [(clock, rate), (clock + elapsed, rate)]
            clock += elapsed
    return {"points": points, "source": "labels per second, each run's average (no answer times in a store)"}


def _answer_times(store: Path | None, run_ids: list[str]) -> list[float]:
    if not run_ids or store is None:
        return []
    marks = ",".join("?" * len(run_ids))
    try:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            rows = db.execute(f"SELECT created_at FROM results WHERE run_id IN ({marks}) "
                              "AND created_at IS NOT NULL ORDER BY created_at", run_ids).fetchall()
    except sqlite3.Error:
        return []
    return [r[0] for r in rows]


def _attach_texts(labels: pl.LazyFrame, rows: list[dict[str, Any]], text_column: str,
                  id_column: str | None) -> None:
    """Put the input text beside each row, when the inputs are small local files still in place."""
    from pipeline.readers import InputError, open_inputs

    wanted = {r["row_number"] for r in rows}
    if not wanted:
        return
    files = labels.select(pl.col("input_file").unique()).collect().get_column("input_file").to_list()
    paths = [Path(f) for f in files if f]
    if not paths or not all(p.is_file() for p in paths) or sum(p.stat().st_size for p in paths) > TEXT_LOOKUP_BYTES:
        return
    found: dict[int, tuple[str, str | None]] = {}
    try:
        inputs = open_inputs([str(p) for p in paths], text_column=text_column, id_column=id_column)
        number = 0
        for batch in inputs.batches(batch_size=4096):
            for row_id, text in zip(batch.ids, batch.texts, strict=True):
                if number in wanted:
                    found[number] = (row_id, text)
                number += 1
            if number > max(wanted):
                break
    except (InputError, OSError, ValueError):
        return
    for row in rows:
        hit = found.get(row["row_number"])
        if hit is not None and hit[0] == row["id"]:  # the same input still: show its text
            row["text"] = hit[1]
