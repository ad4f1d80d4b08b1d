"""Ingest batch result files into the output folder they were prepared for: the lifecycle of
``moderate batch ingest`` (lock, the job as prepared, store, labels, reports), with no printing.

>>> result = ingest_folder("out/batch", ["results.jsonl"])  # doctest: +SKIP
>>> result.done.answered, result.report["cost_usd"]  # doctest: +SKIP
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.settings import run_secrets
from pipeline.core.cost import batch_discount, lookup_pricing
from pipeline.core.errors import UserError
from pipeline.core.storage import StorageSettings, configure, is_uri
from pipeline.engines.batchfiles.ingest import Ingested, ingest
from pipeline.engines.batchfiles.job import open_job, restore
from pipeline.engines.runlog import RunLog
from pipeline.engines.session import Session
from pipeline.output import open_output_dir
from pipeline.output.store import ResultStore

__all__ = ["BatchUsageError", "FolderIngest", "ingest_folder"]


class BatchUsageError(UserError):
    """A batch folder used as it cannot be (not prepared, the job changed since, no such folder)."""


@dataclass(slots=True)
class FolderIngest:
    """What an ingest did, and the folder's cost report after it."""

    done: Ingested
    report: dict[str, Any]
    out: str
    labels_dir: str
    report_path: str


def ingest_folder(out_dir: str, files: list[str]) -> FolderIngest:
    """Read ``files`` (a batch API's output and error files) into ``out_dir``; idempotent per line.

    Raises `UserError` (one line) for a folder that does not exist, was not prepared, or whose job changed.
    """
    if not is_uri(out_dir) and not Path(out_dir).is_dir():
        raise BatchUsageError(f"{out_dir}: no such output folder: run 'moderate batch prepare --out OUT_DIR ...' "
                              "first")
    outdir = open_output_dir(out_dir)
    outdir.lock()
    try:
        manifest = outdir.read_manifest()
        if manifest is None or manifest.job is None:
            raise BatchUsageError(f"{out_dir}: not prepared for batch files: run 'moderate batch prepare "
                                  "--out OUT_DIR ...' first")
        config = restore(manifest.job, out=out_dir)
        configure(StorageSettings(config.storage_endpoint_url, config.storage_timeout, config.storage_lock))
        job = open_job(config)
        if job.identity != manifest.identity:
            changed = ", ".join(k for k in job.identity if manifest.identity.get(k) != job.identity[k])
            raise BatchUsageError(f"{out_dir}: the job changed since 'batch prepare' ({changed} changed): "
                                  "prepare it again")
        pricing = lookup_pricing(provider=config.provider, model=job.model,
                                 input_per_million=config.input_per_million,
                                 cached_input_per_million=config.cached_input_per_million,
                                 output_per_million=config.output_per_million)
        store = ResultStore(config.store or outdir.default_store())
        done = ingest(job, manifest, outdir=outdir, store=store, files=[Path(f) for f in files],
                      pricing=pricing.discounted(batch_discount(provider=config.provider, model=job.model)))
        session = Session(config, _Priced(job, pricing), outdir, store, manifest,
                          RunLog(io.StringIO(), secret=run_secrets(config)))
        report = session.reports(drift=False)
    finally:
        outdir.unlock()
    return FolderIngest(done, report, str(outdir.path), str(outdir.labels), str(outdir.path / "cost_report.md"))


class _Priced:
    """A batch job with the list prices its report shows (what a session reads of a job)."""

    def __init__(self, job: Any, pricing: Any) -> None:
        self.inputs, self.plans, self.model, self.pricing = job.inputs, job.plans, job.model, pricing
