"""Benchmark 6, scale projection: how many gpt-oss-safeguard GPUs one `moderate` process can keep busy.

From benchmark 1's CPU cost per row of the moderate process (user + system time / rows, default
store), the rows/s one core sustains, divided by an assumed request rate per GPU.
"""

from __future__ import annotations

from typing import Any

from bench import client_overhead
from bench.common import Report

#: ASSUMPTION, not a measurement: requests/s one H100 serves with vLLM, gpt-oss-safeguard-20b, low effort.
#: A request here is ~540 prompt tokens (~500 of them the policy, a prefix vLLM caches) and, at low
#: reasoning effort, ~150-250 output tokens. GPUStack's published vLLM runs of gpt-oss-20b on one H100
#: reach ~19-33 k total tokens/s at high concurrency; with a cached prefix decode dominates, so
#: ~25-40 k tokens/s of (mostly cached) request traffic ≈ 40 requests/s.
GPU_RPS = 40.0
SENSITIVITY = (20.0, 40.0, 80.0)


def run(*, long: bool, results: dict[str, Any]) -> Report:
    if "client" not in results:
        client_overhead.run(long=long, results=results)
    store = results["client"]["store"]
    cpu_per_row = store.cpu_s / store.rows
    one_core = 1.0 / cpu_per_row
    report = Report("6. Scale projection (from benchmark 1's CPU per row, default store)")
    report.add_table(["figure", "value"], [
        ["moderate CPU per row (user + system, all threads)", f"{cpu_per_row * 1000:.3f} ms"],
        ["rows/s one process can drive if its core does nothing else", f"{one_core:,.0f}"],
        ["measured rows/s on this machine (simulator on the same 2 cores)", f"{store.loop_rps:,.0f}"],
    ])
    report.add_table(["assumed requests/s per GPU", "GPUs one process keeps busy"],
                     [[f"{rps:g}" + (" (assumption used)" if rps == GPU_RPS else ""), f"{one_core / rps:.0f}"]
                      for rps in SENSITIVITY])
    report.note(f"Assumption: one H100 running vLLM with gpt-oss-safeguard-20b at low reasoning effort serves "
                f"~{GPU_RPS:g} requests/s (~540 prompt tokens, ~500 of them a cached policy prefix, ~150-250 "
                "output tokens; published vLLM runs of gpt-oss-20b on one H100 reach ~19-33 k total tokens/s at "
                "high concurrency). One policy per row = one request per row; with P policies divide the row "
                "rate by P. The 120b model serves fewer requests per GPU, so one process keeps more GPUs busy.")
    report.results.update(cpu_ms_per_row=cpu_per_row * 1000, rows_per_core=one_core, gpus=one_core / GPU_RPS)
    results["scale"] = report.results
    return report
