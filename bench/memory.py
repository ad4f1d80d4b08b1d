"""Benchmark 4, memory: peak RSS of `moderate run` at 10 k and 100 k rows (1 M with --long).

Inputs are the tweets repeated into one Parquet file under bench/out/ with unique ids; each copy
after the first gets a suffix (" #2", " #3", ...) so every row is a new text and costs a call
(repeated texts would be answered from the dedup cache instead). Zero-latency simulator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench.clients import run_moderate
from bench.common import OUT, TWEETS, Report, shown_cmd, simulator

TARGET_MB = 300.0
TARGET_FLAT = 0.20
ROW_GROUP = 65_536


def make_input(rows: int) -> Path:
    """``bench/out/tweets-ROWS.parquet`` (id, text), made once and reused."""
    path = OUT / f"tweets-{rows}.parquet"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    tweets = pacsv.read_csv(TWEETS, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                            convert_options=pacsv.ConvertOptions(include_columns=["tweet"],
                                                                 column_types={"tweet": pa.string()}))
    base = tweets.column("tweet").to_pylist()
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            ids, texts = [], []
            for i in range(start, min(rows, start + ROW_GROUP)):
                copy, j = divmod(i, len(base))
                ids.append(f"t{i:07d}")
                texts.append(base[j] if copy == 0 else f"{base[j]} #{copy + 1}")
            writer.write_table(pa.table({"id": ids, "text": texts}, schema=schema))
    tmp.replace(path)
    return path


def run(*, long: bool, results: dict[str, Any]) -> Report:
    sizes = [10_000, 100_000] + ([1_000_000] if long else [])
    inputs = {n: make_input(n) for n in sizes}
    table, peaks, cmd = [], {}, []
    with simulator("--latency-ms", "0", max_seconds=3600) as sim:
        for store in (None, "none"):
            for n in sizes:
                label = "default store" if store is None else "--store none"
                mod, cmd = run_moderate(sim, name=f"memory-{n}-{'store' if store is None else 'nostore'}",
                                        store=store, inputs=[inputs[n]], text_column="text", timeout=3000)
                if mod.rows != n or mod.requests != n:
                    raise RuntimeError(f"{mod.name}: {mod.rows} labels, {mod.requests} requests for {n} rows")
                peaks[(label, n)] = mod.max_rss_mb
                table.append([label, n, mod.max_rss_mb, mod.loop_rps, mod.cpu_ms_per_row])
    report = Report("4. Memory (peak RSS of `moderate run`, zero-latency simulator, unique texts)")
    report.add_table(["store", "rows", "peak RSS MB", "rows/s", "CPU ms/row"], table)
    checks = []
    for label in ("default store", "--store none"):
        small, big = peaks[(label, sizes[0])], max(peaks[(label, n)] for n in sizes)
        growth = big / small - 1.0
        ok = growth <= TARGET_FLAT and big <= TARGET_MB
        checks.append([label, f"{growth:+.1%}", f"{big:.0f} MB", "yes" if ok else "**no**"])
    report.add_table(["store", f"growth {sizes[0]:,} → {sizes[-1]:,} rows", "largest peak",
                      f"flat within {TARGET_FLAT:.0%} and <= {TARGET_MB:.0f} MB"], checks)
    report.note(f"Command: `{shown_cmd(cmd)}` (and without `--store none`); peak RSS from `wait4` on the "
                "moderate process.")
    report.results.update({f"{k[0]}@{k[1]}": v for k, v in peaks.items()})
    results["memory"] = report.results
    return report
