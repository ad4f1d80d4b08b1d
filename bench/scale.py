"""Benchmark 6, scale projection: how many gpt-oss-safeguard GPUs one `moderate` process can keep busy.

From benchmark 1's CPU cost per row of the moderate process (user + system time of the process, less
the fixed cost of a one-row run, / rows; default store): the rows/s one core of client CPU sustains,
divided by an assumed request rate per GPU.
"""

from __future__ import annotations

from typing import Any

from bench import client_overhead
from bench.common import Report

#: ASSUMPTION, not a measurement: requests/s one H100 serves with vLLM, gpt-oss-safeguard-20b, low effort.
#: A request here is ~540 prompt tokens (~500 of them the policy, a prefix vLLM caches) and, at low
#: reasoning effort, ~150-250 output tokens. GPUStack's published vLLM runs of gpt-oss-20b on one H100
#: reach ~19-33 k total (input + output) tokens/s at high concurrency: 40 requests/s x ~740 tokens
#: ≈ 30 k tokens/s, inside that range (a cached prefix makes the prompt cheaper than those runs' inputs).
GPU_RPS = 40.0
SENSITIVITY = (20.0, 40.0, 80.0)


def run(*, long: bool, results: dict[str, Any]) -> Report:
    if "client" not in results:
        client_overhead.run(long=long, results=results)
    store = results["client"]["store"]
    cpu_per_row = results["client"]["marginal_cpu_ms"]["store"] / 1000  # without the fixed start-up cost
    one_core = 1.0 / cpu_per_row
    report = Report("6. Scale projection (from benchmark 1's CPU per row, default store)")
    measured = store.loop_rps
    report.add_table(["figure", "value"], [
        ["moderate CPU per row (user + system, all threads, start-up cost taken out)",
         f"{cpu_per_row * 1000:.3f} ms"],
        ["rows/s for one core of client CPU (1 / CPU per row)", f"{one_core:,.0f}"],
        ["rows/s measured here (2 cores shared with the simulator)", f"{measured:,.0f}"],
        ["cores the moderate process used (CPU / process wall time)", f"{store.cpu_s / store.wall_s:.2f}"],
    ])
    report.add_table(["assumed requests/s per GPU", "GPUs busy: one core of client CPU",
                      "GPUs busy: rate measured here"],
                     [[f"{rps:g}" + (" (assumption used)" if rps == GPU_RPS else ""), f"{one_core / rps:.0f}",
                       f"{measured / rps:.0f}"] for rps in SENSITIVITY])
    report.note(f"Assumption: one H100 running vLLM with gpt-oss-safeguard-20b at low reasoning effort serves "
                f"~{GPU_RPS:g} requests/s (~540 prompt tokens, ~500 of them a cached policy prefix, ~150-250 "
                "output tokens; published vLLM runs of gpt-oss-20b on one H100 reach ~19-33 k total tokens/s at "
                "high concurrency). The event loop holds the GIL, but the reader, the store's commit thread and the "
                "shard writer run partly outside it, so one process can use a bit more than one core. "
                "One policy per row = one request per row; with P policies divide the row "
                "rate by P. The 120b model serves fewer requests per GPU, so one process keeps more GPUs busy. "
                f"Keeping {one_core:,.0f} requests/s in flight at a real latency of ~3 s takes ~"
                f"{one_core * 3:,.0f} concurrent requests (Little's law): far beyond the 64-256 connections "
                "measured here, so the connection count, not the CPU, is the first limit to check.")
    report.results.update(cpu_ms_per_row=cpu_per_row * 1000, rows_per_core=one_core, gpus=one_core / GPU_RPS)
    results["scale"] = report.results
    return report
