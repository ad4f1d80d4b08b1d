"""Sampling, canaries, drift and self-hosted cost around a run: set-up from the config, the files
they leave (``OUT/canaries.parquet``) and their sections of the cost report.

The rules themselves are pure (`pipeline.quality.sampling`, `pipeline.quality.canaries`, `pipeline.quality.drift`,
`pipeline.core.cost.gpu_cost`); this module reads and writes what they need.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config.settings import DRIFT_OFF, RunConfig
from pipeline.core.cost import gpu_cost
from pipeline.core.records import Outcome
from pipeline.output.outdir import Manifest
from pipeline.output.outfiles import temp_name
from pipeline.quality.canaries import Canary, CanaryAnswer, read_canaries, score
from pipeline.quality.drift import compare, describe
from pipeline.quality.sampling import chosen, sample_rate, sample_summary

__all__ = ["CANARY_FILE", "canary_requests", "canary_slots", "extend_report", "finish_canaries", "finish_fields",
           "report_rates", "run_rates", "sampler", "start_fields", "summary_notes", "write_canaries"]

CANARY_FILE = "canaries.parquet"
_CANARY_SCHEMA = pa.schema([
    ("canary", pa.int32()), ("where", pa.string()), ("policy", pa.string()), ("text", pa.string()),
    ("expected", pa.int8()), ("status", pa.string()), ("violation", pa.int8()), ("rationale", pa.string()),
    ("error", pa.string()), ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32()),
    ("cost_usd", pa.float64()), ("run_id", pa.string()),
])


def sampler(config: RunConfig, total_rows: int | None) -> tuple[Callable[[int], bool] | None, float | None]:
    """The sample's row test and rate, or (None, None) without ``sample``. ValueError: see `sample_rate`."""
    if config.sample is None:
        return None, None
    rate = sample_rate(config.sample, total_rows)
    return functools.partial(chosen, seed=config.seed, rate=rate), rate


def canary_requests(config: RunConfig, policy_names: Sequence[str]) -> tuple[list[Canary], int]:
    """The configured canaries for the run's policies (and how many were for other policies)."""
    if not config.canaries:
        return [], 0
    return read_canaries(config.canaries, set(policy_names))


def canary_slots(canaries: Sequence[Canary], policies: Sequence[str]) -> list[tuple[int, int, str]]:
    """(canary index, index of its policy in the run, text): what the run queues."""
    return [(c.index, policies.index(c.policy), c.text) for c in canaries]


def finish_canaries(out: Path, canaries: Sequence[Canary], answers: Mapping[int, Outcome], run_id: str) -> int:
    """Write ``OUT/canaries.parquet``; returns how many canaries got the wrong verdict."""
    write_canaries(out, canaries=canaries, answers=answers, run_id=run_id)
    verdicts = {i: CanaryAnswer(o.status.value, o.verdict.violation if o.verdict else None)
                for i, o in answers.items()}
    return score(canaries, verdicts)["wrong"]


def run_rates(violations: Mapping[tuple[str, int], int]) -> dict[str, tuple[int, int]]:
    """(ok labels, violations) per policy from a run's counts of ok labels by (policy, violation).

    >>> run_rates({("spam", 0): 8, ("spam", 1): 2, ("hate", 0): 5})
    {'spam': (10, 2), 'hate': (5, 0)}
    """
    counts: dict[str, tuple[int, int]] = {}
    for (policy, violation), n in violations.items():
        ok, v = counts.get(policy, (0, 0))
        counts[policy] = (ok + n, v + (n if violation == 1 else 0))
    return counts


def report_rates(report: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """(ok labels, violations) per policy of a whole output directory, from its cost report's shard counts.

    >>> report_rates({"per_policy": {"spam": {"violations": {"0": 8, "1": 2}}, "hate": {"violations": {}}}})
    {'spam': (10, 2), 'hate': (0, 0)}
    """
    counts = {}
    for policy, values in report.get("per_policy", {}).items():
        verdicts = values.get("violations") or {}
        counts[policy] = (sum(verdicts.values()), verdicts.get("1", 0))
    return counts


def start_fields(run: Any, config: RunConfig, inputs: Any, rate: float | None, canaries: int) -> dict[str, Any]:
    """The ``start`` event of the JSON log."""
    s = run.settings
    return {"message": f"moderate: run {s.run_id} started", "run_id": s.run_id, "out": str(run.outdir.path),
            "input_files": len(inputs.files), "input_rows": inputs.total_rows,
            "policies": [p.policy.name for p in run.plans], "model": s.model, "provider": config.provider,
            "keep_columns": config.keep_columns, "sample": config.sample, "sample_rate": rate, "seed": config.seed,
            "canaries": canaries, "concurrency": s.concurrency}


def write_canaries(out: Path, *, canaries: Sequence[Canary], answers: Mapping[int, Outcome], run_id: str) -> None:
    """This run's canaries and their answers in ``OUT/canaries.parquet`` (replacing an earlier run's)."""
    rows = []
    for c in canaries:
        o = answers.get(c.index)
        verdict = o.verdict if o is not None else None
        rows.append({"canary": c.index, "where": c.where, "policy": c.policy, "text": c.text, "expected": c.expected,
                     "status": o.status.value if o is not None else "unsent",
                     "violation": verdict.violation if verdict is not None else None,
                     "rationale": verdict.rationale if verdict is not None else None,
                     "error": o.error if o is not None else None,
                     "prompt_tokens": o.usage.prompt_tokens if o is not None else 0,
                     "completion_tokens": o.usage.completion_tokens if o is not None else 0,
                     "cost_usd": o.cost_usd if o is not None else 0.0, "run_id": run_id})
    table = pa.Table.from_pylist(rows, schema=_CANARY_SCHEMA)
    if not isinstance(out, Path):  # an object store: one upload replaces the object whole
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        (out / CANARY_FILE).write_bytes(sink.getvalue().to_pybytes())
        return
    temp = temp_name(out / CANARY_FILE)
    try:
        pq.write_table(table, temp)
        temp.replace(out / CANARY_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise


def extend_report(report: dict[str, Any], *, out: Path, manifest: Manifest, config: RunConfig,
                  rates: tuple[dict, list[dict]] | None) -> None:
    """Add the ``sample``, ``canaries``, ``drift``, ``self_hosted``, ``max_cost_usd`` and per-label cost sections."""
    labels = report["labels"]
    report["max_cost_usd"] = config.max_cost  # the cap the directory's spend is held to (None: none)
    report["cost_per_1000_labels"] = round(report["cost_usd"] / labels * 1000, 8) if labels else 0.0
    report["sample"] = _sample(report, out, manifest, config)
    report["canaries"] = _canaries(out)
    current, history = rates or ({}, [])
    if config.drift_threshold == DRIFT_OFF:
        report["drift"] = {"threshold": None, "off": True, "runs": 0, "policies": [], "flagged": ""}
    else:
        drifts = compare(current, history, threshold=config.drift_threshold)
        report["drift"] = {"threshold": config.drift_threshold, "off": False, "runs": len(history),
                           "policies": [d.as_dict() for d in drifts], "flagged": describe(drifts)}
    report["self_hosted"] = None
    if config.gpu_hour_usd is not None:
        wall = round(sum(run.get("elapsed_s") or 0.0 for run in report["runs"]), 3)
        report["self_hosted"] = gpu_cost(gpu_hour_usd=config.gpu_hour_usd, wall_seconds=wall, labels=labels)


def _sample(report: dict[str, Any], out: Path, manifest: Manifest, config: RunConfig) -> dict[str, Any] | None:
    if config.sample is None:
        return None

    total = manifest.total_rows if manifest.total_rows is not None else sum(
        s.input_rows for s in manifest.shards.values())
    # on an object store the per-row cost is left out (the interval is on counts only)
    files = sorted((out / "labels").glob("part-*.parquet")) if isinstance(out, Path) else []
    shares = _text_shares(config, total) if files else None
    cost, squares = _sampled_cost(files, shares) if files else (0.0, 0.0)
    rate = total and report["rows"] / total
    summary = sample_summary(total_rows=total, sampled_rows=report["rows"], seed=config.seed,
                             rate=round(rate or 0.0, 8), violations={p: v.get("violations", {}) for p, v in
                                                                     report["per_policy"].items()},
                             cost_usd=cost, cost_sum_squares=squares)
    summary["asked"] = config.sample
    summary["duplicates_counted"] = shares is not None
    return summary


def _text_shares(config: RunConfig, total: int) -> Any:
    """Each input row's share of its text's call (1 / rows with that text), read again from a local
    input; None when it cannot be (an object store, a changed or unreadable input)."""
    from pipeline.plan.prompt import normalise
    from pipeline.quality.sampling import text_digest, text_shares
    from pipeline.readers import InputError, open_inputs

    if any("://" in path for path in config.inputs):
        return None
    try:
        inputs = open_inputs(config.inputs, text_column=config.text_column, id_column=config.id_column,
                             limit=config.limit)
        digests = (text_digest(normalise(text) if text else None)
                   for batch in inputs.batches(batch_size=8192) for text in batch.texts)
        shares = text_shares(digests)
    except (InputError, OSError):
        return None
    return shares if len(shares) == total else None


def _sampled_cost(files: list[Path], shares: Any) -> tuple[float, float]:
    """Sum and sum of squares over the sampled rows of what each row's labels cost.

    Without ``shares``: what each row paid (duplicates and store hits paid nothing). With them: the
    cost of each label's call (paid by this row or by the row it duplicates) times the row's share of
    its text, so that summed over every input row each text is paid once.
    """
    import polars as pl

    frame = pl.scan_parquet(files).select("row_number", "source", "fingerprint", pl.col("cost_usd").fill_null(0.0))
    if shares is None:
        paid = pl.when(pl.col("source") == "api").then(pl.col("cost_usd")).otherwise(0.0)
        rows = frame.group_by("row_number").agg(paid.sum().alias("y"))
    else:
        calls = (frame.filter(pl.col("source") == "api").group_by("fingerprint")
                 .agg(pl.col("cost_usd").first().alias("call")))
        share = pl.DataFrame({"row_number": np.arange(len(shares), dtype=np.int64), "share": shares}).lazy()
        rows = (frame.join(calls, on="fingerprint", how="left").group_by("row_number")
                .agg(pl.col("call").fill_null(0.0).sum()).join(share, on="row_number", how="left")
                .select("row_number", y=pl.col("call") * pl.col("share").fill_null(1.0)))
    sums = rows.select(s=pl.col("y").sum(), q=(pl.col("y") ** 2).sum()).collect()
    return float(sums["s"][0] or 0.0), float(sums["q"][0] or 0.0)


def _canaries(out: Path) -> dict[str, Any] | None:
    path = out / CANARY_FILE
    if not isinstance(path, Path):  # an object store
        data = path.read_bytes()
        if data is None:
            return None
        rows = pq.read_table(pa.BufferReader(data)).to_pylist()
    elif not path.exists():
        return None
    else:
        rows = pq.read_table(path).to_pylist()
    canaries = [Canary(r["canary"], r["where"], r["policy"], r["text"], r["expected"]) for r in rows]
    answers = {r["canary"]: CanaryAnswer(r["status"], r["violation"]) for r in rows}
    summary = score(canaries, answers)
    summary["run_id"] = rows[0]["run_id"] if rows else None
    summary["cost_usd"] = round(sum(r["cost_usd"] or 0.0 for r in rows), 8)
    return summary


def summary_notes(report: dict[str, Any]) -> str:
    """What the summary line adds: wrong canaries, flagged drift, the sample's scale ("" when none)."""
    notes = []
    canaries = report.get("canaries")
    if canaries and canaries["wrong"]:
        notes.append(f"CANARIES WRONG: {canaries['wrong']} of {canaries['total']}")
    elif canaries:
        notes.append(f"canaries {canaries['passed']}/{canaries['total']} passed")
    drift = report.get("drift") or {}
    if drift.get("flagged"):
        notes.append(drift["flagged"].replace("drift:", "DRIFT:", 1))
    sample = report.get("sample")
    if sample and sample.get("cost_usd_in_input"):
        c = sample["cost_usd_in_input"]
        notes.append(f"sample of {sample['sampled_rows']:,} of {sample['input_rows']:,} rows: the whole input "
                     f"would cost ${c['estimate']:.4f} (${c['low']:.4f}-${c['high']:.4f})")
    hosted = report.get("self_hosted")
    if hosted and hosted["per_1000_labels"] is not None:
        notes.append(f"GPU ${hosted['per_1000_labels']:.4f} per 1,000 labels")
    return "; ".join(notes)


def finish_fields(report: dict[str, Any]) -> dict[str, Any]:
    """The report's figures a ``finish`` log event carries."""
    keys = ("rows", "labels", "statuses", "cost_usd", "list_price_cost_usd", "cost_per_1000_labels", "sample",
            "canaries", "drift", "self_hosted")
    return {key: report.get(key) for key in keys}
