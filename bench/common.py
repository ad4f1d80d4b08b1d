"""What every benchmark shares: the simulator as a separate process, measured child processes,
machine information and the Markdown tables of a report (bench/record.py keeps BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
# the shared data sets sit beside the repository; MODERATE_DATASETS points elsewhere
DATASETS = Path(os.environ.get("MODERATE_DATASETS") or REPO.parent / "shared" / "datasets")
TWEETS = DATASETS / "davidson_tweets" / "labeled_data.csv"
TWEETS_ROWS = 24_783
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
PYTHON = sys.executable
MODEL = "gpt-oss-safeguard-20b-simulator"
POLICY = "spam"
OUTPUT_FORMAT = "binary"


# -- the simulator ------------------------------------------------------------------------------

@dataclass(slots=True)
class SimulatorProcess:
    """A running ``moderate simulate``: its URL and its live counters."""

    proc: subprocess.Popen[str]
    base_url: str  # http://127.0.0.1:PORT/v1

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def stats(self) -> dict[str, Any]:
        """The simulator's counters (``/_simulator/stats``)."""
        with urllib.request.urlopen(self.root + "/_simulator/stats", timeout=10) as reply:
            return json.loads(reply.read())

    def rusage_cpu_s(self) -> float | None:
        """CPU seconds the simulator used so far (Linux /proc), or None when unreadable."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def simulator(*args: str, max_seconds: float = 900.0) -> Iterator[SimulatorProcess]:
    """Start ``moderate simulate --port 0 ARGS`` and stop it on exit, whatever happens."""
    cmd = [PYTHON, "-m", "pipeline", "simulate", "--port", "0", "--max-seconds", f"{max_seconds:g}",
           "--idle-seconds", "600", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.search(r"(http://\S+/v1)", line)
        if match is None:
            raise RuntimeError(f"the simulator did not start: {line.strip() or 'no output'} ({' '.join(cmd)})")
        yield SimulatorProcess(proc, match.group(1))
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any], *, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; closes its pipes."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


# -- measured child processes -------------------------------------------------------------------

@dataclass(slots=True)
class Measured:
    """One child process: exit code, wall time, CPU time and peak RSS (from wait4)."""

    cmd: list[str]
    returncode: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    stdout: str
    stderr: str
    extra: dict[str, Any] = field(default_factory=dict)


def run_measured(cmd: Sequence[str], *, timeout: float, log: Path | None = None,
                 interrupt_after: float | None = None) -> Measured:
    """Run ``cmd`` to the end, measuring it alone: ``os.wait4`` gives that child's own rusage.

    ``interrupt_after`` seconds: send one SIGINT (a graceful stop) if it is still running then.
    stdout/stderr go to files (``log``.stdout/.stderr) so a chatty child never blocks.
    """
    log = log or OUT / f"child-{os.getpid()}-{time.monotonic_ns()}"
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log.with_suffix(".stdout"), log.with_suffix(".stderr")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            status, usage = _wait4(proc, deadline=started + timeout,
                                   interrupt_at=None if interrupt_after is None else started + interrupt_after)
        finally:
            if proc.returncode is None:  # timed out or interrupted: do not leave it running
                stop(proc)
        wall = time.perf_counter() - started
    return Measured(
        cmd=list(cmd), returncode=os.waitstatus_to_exitcode(status), wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime, max_rss_mb=usage.ru_maxrss / 1024.0,
        stdout=out_path.read_text(errors="replace"), stderr=err_path.read_text(errors="replace"),
    )


def _wait4(proc: subprocess.Popen[Any], *, deadline: float, interrupt_at: float | None) -> tuple[int, Any]:
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return status, usage
        if interrupt_at is not None and time.perf_counter() > interrupt_at:
            proc.send_signal(signal.SIGINT)
            interrupt_at = None
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{' '.join(proc.args)} ran past its time limit")  # type: ignore[arg-type]
        time.sleep(0.005)


def fresh_dir(name: str) -> Path:
    """An empty directory ``bench/out/NAME``."""
    path = OUT / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def shown_cmd(cmd: Sequence[str]) -> str:
    """A command as a reader would type it (paths relative to the repository, ``moderate``)."""
    words = []
    for word in cmd:
        word = "moderate" if word == PYTHON and len(words) == 0 else word
        word = re.sub(r"http://127\.0\.0\.1:\d+/v1", "SIMULATOR_URL", word)
        word = word.replace(str(DATASETS) + "/", "../shared/datasets/").replace(str(REPO) + "/", "")
        words.append(word)
    return " ".join(words).replace("moderate -m pipeline", "moderate").replace("moderate -m bench", "python -m bench")


# -- machine and log ----------------------------------------------------------------------------

def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {"cores": str(os.cpu_count()), "cpu": cpu, "ram": ram,
            "python": platform.python_version(), "commit": git_commit()}


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"
    return f"{head} (uncommitted changes)" if dirty else head or "uncommitted"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> tuple[str, str]:
    """The same table as aligned text (for the terminal) and as Markdown."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    text = "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in cells)
    md = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return text, "\n".join(md)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


@dataclass(slots=True)
class Report:
    """One benchmark's output: a title, tables and notes; printed and recorded in BENCHMARKS.md."""

    title: str
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (text, markdown)
    results: dict[str, Any] = field(default_factory=dict)

    def add_table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.blocks.append(table(headers, rows))

    def note(self, text: str) -> None:
        self.blocks.append((text, text))

    def text(self) -> str:
        return "\n\n".join([f"== {self.title} ==", *(b[0] for b in self.blocks)])

    def markdown(self) -> str:
        return "\n\n".join([f"### {self.title}", *(b[1] for b in self.blocks)])
