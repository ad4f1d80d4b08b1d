"""The cost report: `cost_report.json` for machines, `cost_report.md` for people.

Billing comes from the store's ledger (the server's `usage`, summed over every run that wrote to
this output directory); label counts and latencies come from the shards themselves.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from pipeline.core.cost import Pricing, batch_discount
from pipeline.core.storage import Location
from pipeline.output.outdir import atomic_write_text

_TOKEN_KEYS = ("requests", "estimated_requests", "prompt_tokens", "cached_prompt_tokens",
               "completion_tokens", "reasoning_tokens")


def build_report(*, billing: list[dict], runs: list[dict], labels_dir: Path | Location, pricing: Pricing,
                 provider: str, model: str) -> dict[str, Any]:
    """Everything billed to produce one output directory, with label statistics."""
    totals: dict[str, Any] = dict.fromkeys(_TOKEN_KEYS, 0)
    totals["cost_usd"] = totals["list_price_cost_usd"] = 0.0
    totals["server_cost_requests"] = 0
    per_policy: dict[str, dict[str, Any]] = {}
    server_cost = None
    per_run: dict[str, dict[str, Any]] = {}
    for bill in billing:
        # cost_usd of a report is what was charged: the host's own figure where it reported one
        # (OpenRouter's usage.cost), else the list price; list_price_cost_usd is the list price of all
        bill = {**bill, "list_price_cost_usd": bill["cost_usd"],
                "cost_usd": bill["cost_usd"] if bill.get("charged_usd") is None else bill["charged_usd"]}
        for target in (totals, per_policy.setdefault(bill["policy"], {**dict.fromkeys(_TOKEN_KEYS, 0),
                                                                         "cost_usd": 0.0, "list_price_cost_usd": 0.0}),
                       per_run.setdefault(bill["run_id"], {"requests": 0, "cost_usd": 0.0})):
            for key in target:
                target[key] += bill.get(key) or 0
        if bill["server_cost_usd"] is not None:
            server_cost = (server_cost or 0.0) + bill["server_cost_usd"]
    stats = label_stats(labels_dir)
    elapsed = sum(run.get("elapsed_s") or 0.0 for run in runs)
    rows = stats["rows"]
    report: dict[str, Any] = {
        **{key: totals[key] for key in _TOKEN_KEYS},
        "cost_usd": round(totals["cost_usd"], 8),
        "cost_basis": _basis(totals["server_cost_requests"], totals["requests"]),
        "list_price_cost_usd": round(totals["list_price_cost_usd"], 8),
        "usage_estimated": totals["estimated_requests"] > 0,
        "server_reported_cost_usd": server_cost,
        "pricing": pricing.as_dict(),
        "provider": provider,
        "model": model,
        "simulated": provider == "simulator",
        "store_hits": sum(run.get("store_hits") or 0 for run in runs),
        "duplicates": sum(run.get("duplicates") or 0 for run in runs),
        "rows": rows,
        "labels": stats["labels"],
        # input rows whose id another row already has (each row is still labelled on its own)
        "duplicate_ids": stats["duplicate_ids"],
        "cost_per_1000_rows": round(totals["cost_usd"] / rows * 1000, 8) if rows else 0.0,
        "rows_per_second": round(rows / elapsed, 2) if elapsed else None,
        "latency_ms": stats["latency_ms"],
        "statuses": stats["statuses"],
        "per_endpoint": stats["per_endpoint"],
        "per_policy": {
            name: {**{k: round(v, 8) if isinstance(v, float) else v for k, v in values.items()},
                   "violations": stats["violations"].get(name, {})}
            for name, values in sorted(per_policy.items())
        },
        "runs": [
            {**run, **{k: round(v, 8) if isinstance(v, float) else v
                       for k, v in per_run.get(run["run_id"], {"requests": 0, "cost_usd": 0.0}).items()}}
            for run in runs
        ],
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    batch_runs = [run["run_id"] for run in runs if run.get("outcome") == "batch"]
    if batch_runs:  # answers read back from batch files, billed at the host's batch prices
        report["batch"] = {
            "requests": sum(per_run.get(r, {}).get("requests", 0) for r in batch_runs),
            "cost_usd": round(sum(per_run.get(r, {}).get("cost_usd", 0.0) for r in batch_runs), 8),
            "discount": batch_discount(provider=provider, model=model),
        }
    for name in stats["violations"]:
        report["per_policy"].setdefault(name, {**dict.fromkeys(_TOKEN_KEYS, 0), "cost_usd": 0.0,
                                               "violations": stats["violations"][name]})
    return report


def add_earlier_stores(report: dict[str, Any], usd: float) -> None:
    """Count what the directory spent through another store (or --store none) in its totals."""
    report["earlier_stores_usd"] = round(usd, 8)
    if usd:
        report["cost_usd"] = round(report["cost_usd"] + usd, 8)
        report["list_price_cost_usd"] = round(report["list_price_cost_usd"] + usd, 8)


def _basis(reported: int, requests: int) -> str:
    """Which figure ``cost_usd`` is: the host's own charge, the list price, or both in part."""
    if requests and reported >= requests:
        return "host-reported"
    return "mixed" if reported else "list price"


def label_stats(labels_dir: Path | Location) -> dict[str, Any]:
    """Counts by status and by (policy, violation), latency percentiles of paid calls.

    One shard at a time, so memory stays flat whatever the directory holds: only the latencies
    of paid calls (4 bytes each) and a 64-bit hash per row id (for duplicate ids) are kept.
    """
    import polars as pl  # imported here: only the end-of-run report needs it

    statuses: Counter[str] = Counter()
    violations: Counter[tuple[str, int]] = Counter()
    latencies: list[pl.Series] = []
    id_hashes: list[pl.Series] = []
    rows = labels = 0
    columns = ["id", "row_number", "policy", "status", "violation", "latency_ms", "source"]
    endpoints: list[pl.DataFrame] = []
    for path in sorted(labels_dir.glob("part-*.parquet"), key=str):
        if isinstance(path, Location):  # a shard on an object store
            names = pq.read_schema(path.path, filesystem=path.fs).names
            wanted = columns + [c for c in _ENDPOINT_COLUMNS if c in names and c not in columns]
            shard = pl.from_arrow(pq.read_table(path.path, filesystem=path.fs, columns=wanted))
        else:
            names = pq.read_schema(path).names
            shard = pl.read_parquet(path, columns=columns + [c for c in _ENDPOINT_COLUMNS
                                                             if c in names and c not in columns])
        if "endpoint" in shard.columns:  # shards written before endpoints were named have none
            endpoints.append(shard.filter(pl.col("source") == "api").select(_ENDPOINT_COLUMNS))
        labels += shard.height
        row_ids = shard.unique("row_number", keep="first").get_column("id")
        rows += row_ids.len()
        id_hashes.append(row_ids.hash())
        statuses.update(dict(shard.group_by("status").len().iter_rows()))
        ok = shard.filter(pl.col("status") == "ok").group_by("policy", "violation").len()
        violations.update({(policy, violation): n for policy, violation, n in ok.iter_rows()})
        latencies.append(shard.filter(pl.col("source") == "api").get_column("latency_ms"))
    latency = pl.concat(latencies) if latencies else pl.Series("latency_ms", [], dtype=pl.Float32)
    by_policy: dict[str, dict[str, int]] = {}
    for (policy, violation), n in sorted(violations.items()):
        by_policy.setdefault(policy, {})[str(violation)] = n
    return {
        "rows": rows,
        "labels": labels,
        "duplicate_ids": rows - (pl.concat(id_hashes).n_unique() if id_hashes else 0),
        "statuses": dict(sorted(statuses.items())),
        "violations": by_policy,
        "latency_ms": {"p50": _round(latency.quantile(0.5)), "p95": _round(latency.quantile(0.95))},
        "per_endpoint": _per_endpoint(pl.concat(endpoints) if endpoints else None),
    }


#: what the per-endpoint split reads from each shard
_ENDPOINT_COLUMNS = ["endpoint", "status", "latency_ms", "prompt_tokens", "cached_prompt_tokens", "completion_tokens",
                     "cost_usd", "attempts"]


def _per_endpoint(paid: Any) -> dict[str, dict[str, Any]]:
    """Labels paid in this directory, by the endpoint that took their last attempt: tokens, cost, latency
    and errors (labels not ``ok``). A row retried on another endpoint counts where it ended."""
    import polars as pl

    if paid is None or paid.is_empty():
        return {}
    grouped = paid.filter(pl.col("endpoint").is_not_null()).group_by("endpoint").agg(
        pl.len().alias("labels"),
        (pl.col("status") != "ok").sum().alias("errors"),
        pl.col("attempts").cast(pl.Int64).sum().alias("attempts"),
        pl.col("prompt_tokens").cast(pl.Int64).sum().alias("prompt_tokens"),
        pl.col("cached_prompt_tokens").cast(pl.Int64).sum().alias("cached_prompt_tokens"),
        pl.col("completion_tokens").cast(pl.Int64).sum().alias("completion_tokens"),
        pl.col("cost_usd").sum().alias("cost_usd"),
        pl.col("latency_ms").quantile(0.5).alias("p50"),
        pl.col("latency_ms").quantile(0.95).alias("p95"),
    ).sort("endpoint")
    return {row["endpoint"]: {**{k: row[k] or 0 for k in ("labels", "errors", "attempts", "prompt_tokens",
                                                             "cached_prompt_tokens", "completion_tokens")},
                              "cost_usd": round(row["cost_usd"] or 0.0, 8),
                              "latency_ms": {"p50": _round(row["p50"]), "p95": _round(row["p95"])}}
            for row in grouped.iter_rows(named=True)}


def write_reports(report: dict[str, Any], out: Path | Location) -> None:
    atomic_write_text(out / "cost_report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    atomic_write_text(out / "cost_report.md", render_markdown(report))


def render_markdown(report: dict[str, Any]) -> str:
    """The report for people: totals, per policy, runs, statuses, labels."""
    p = report["pricing"]
    lines = [
        "# Moderation cost report",
        "",
        f"Model `{report['model']}` via `{report['provider']}`"
        + (" — **built-in simulator: verdicts come from a keyword rule, not a model**" if report["simulated"] else ""),
        "",
        "| | |",
        "|---|---|",
        f"| rows | {report['rows']:,} |",
        f"| labels (rows x policies) | {report['labels']:,} |",
        f"| billed requests | {report['requests']:,} |",
        f"| prompt tokens (cached) | {report['prompt_tokens']:,} ({report['cached_prompt_tokens']:,}) |",
        f"| completion tokens (reasoning) | {report['completion_tokens']:,} ({report['reasoning_tokens']:,}) |",
        f"| cost ({report['cost_basis']}) | ${report['cost_usd']:.6f} |",
        f"| cost at list price | ${report['list_price_cost_usd']:.6f} |",
        f"| cost per 1,000 rows | ${report['cost_per_1000_rows']:.6f} |",
        f"| served from the store at no cost | {report['store_hits']:,} |",
        f"| duplicates within a run | {report['duplicates']:,} |",
        f"| rows sharing an id with an earlier row | {report['duplicate_ids']:,} |",
        f"| rows/s | {report['rows_per_second'] if report['rows_per_second'] is not None else '-'} |",
        f"| latency p50 / p95 (ms) | {_show(report['latency_ms']['p50'])} / {_show(report['latency_ms']['p95'])} |",
        "",
        f"Prices per 1 M tokens: input ${p['input_per_million']}, cached input ${p['cached_input_per_million']}, "
        f"output ${p['output_per_million']}."
        + (" Some usage was missing from answers and was estimated." if report["usage_estimated"] else "")
        + (f" {report['batch']['requests']:,} requests (${report['batch']['cost_usd']:.6f}) came from batch files, "
           f"billed at batch prices ({report['batch']['discount']:.0%} off)." if "batch" in report else ""),
        "",
        "## Per policy",
        "",
        "| policy | requests | prompt tokens | completion tokens | cost | violations (1) | safe (0) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, pol in report["per_policy"].items():
        v = pol.get("violations", {})
        lines.append(f"| {name} | {pol['requests']:,} | {pol['prompt_tokens']:,} | {pol['completion_tokens']:,} "
                     f"| ${pol['cost_usd']:.6f} | {v.get('1', 0):,} | {v.get('0', 0):,} |")
    if len(report.get("per_endpoint") or {}) > 1:
        lines += ["", "## Per endpoint", "", "Labels paid in this directory, by the endpoint of their last attempt.",
                  "",
                  "| endpoint | labels | attempts | prompt tokens | completion tokens | cost | latency p50 / p95 (ms) "
                  "| not ok |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, e in report["per_endpoint"].items():
            lines.append(f"| {name} | {e['labels']:,} | {e['attempts']:,} | {e['prompt_tokens']:,} "
                         f"| {e['completion_tokens']:,} | ${e['cost_usd']:.6f} | {_show(e['latency_ms']['p50'])} / "
                         f"{_show(e['latency_ms']['p95'])} | {e['errors']:,} |")
    lines += ["", "## Statuses", "", "| status | labels |", "|---|---:|"]
    lines += [f"| {status} | {n:,} |" for status, n in report["statuses"].items()]
    lines += ["", "## Runs", "", "| run | outcome | requests | cost | served from store | seconds |",
              "|---|---|---:|---:|---:|---:|"]
    for run in report["runs"]:
        lines.append(f"| {run['run_id']} | {run.get('outcome') or 'unfinished'} | {run['requests']:,} "
                     f"| ${run['cost_usd']:.6f} | {run.get('store_hits') or 0:,} | {run.get('elapsed_s') or 0:.1f} |")
    return "\n".join(lines) + "\n"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
