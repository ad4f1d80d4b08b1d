"""``python -m bench``: run the benchmarks, print their tables, record them in BENCHMARKS.md."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import traceback
from collections.abc import Callable
from typing import Any

from bench import (
    adaptive,
    batch,
    client_overhead,
    cluster,
    estimate,
    faults,
    latency,
    limiter,
    memory,
    objectstore,
    scale,
    stragglers,
)
from bench.common import Report, git_commit, machine_info
from bench.record import record

BENCHMARKS: dict[str, Callable[..., Report]] = {
    "client": client_overhead.run,
    "latency": latency.run,
    "limiter": limiter.run,
    "memory": memory.run,
    "adaptive": adaptive.run,
    "scale": scale.run,
    "batch": batch.run,
    "objectstore": objectstore.run,
    "estimate": estimate.run,
    "faults": faults.run,
    "stragglers": stragglers.run,
    "ray": cluster.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--long", action="store_true", help="the long versions (minutes each)")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--no-record", action="store_true", help="print only; do not record in BENCHMARKS.md")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    info = machine_info()
    print(f"machine: {info['cores']} cores ({info['cpu']}), {info['ram']}, Python {info['python']}, "
          f"commit {info['commit']}", flush=True)
    results: dict[str, Any] = {}
    reports: list[Report] = []
    failed = 0
    for name in args.only or list(BENCHMARKS):
        print(f"\n-- {name} ...", flush=True)
        try:
            report = BENCHMARKS[name](long=args.long, results=results)
        except Exception as exc:
            failed += 1
            traceback.print_exc()
            report = Report(f"{name}: FAILED")
            report.note(f"`{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}`")
        print(report.text(), flush=True)
        reports.append(report)
    end_commit = git_commit()
    if end_commit != info["commit"]:
        info["commit"] = f"{info['commit']} at the start, {end_commit} at the end (the code changed during the run)"
    if not args.no_record:
        command = "python -m bench" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
        record(reports, results, command=command, started=started, info=info)
        print("\nrecorded in BENCHMARKS.md")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
