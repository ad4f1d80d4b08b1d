"""Ray's processes end with the driver that started them, even when it is killed with SIGKILL.

Ray ties the processes it starts itself (GCS, raylet, log monitor) to the driver through the
kernel, and the workers end with the raylet. But the raylet starts the dashboard and runtime-env
agents, and those, once the raylet is gone, try to tell the GCS (gone too) before they exit: they
linger for minutes. A driver that starts Ray therefore starts this watchdog, a small process of its
own (no Ray import) that lists the driver's descendants twice a second. When the driver ends
without saying ``done`` (SIGKILL, a crash), it ends those still running: SIGTERM, then SIGKILL
after `KILL_AFTER_S`. Linux only (it reads /proc); elsewhere the driver starts no watchdog.

    python -m pipeline.engines.ray.watchdog DRIVER_PID     (stdin: the driver's pipe)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["descendants", "end_processes", "start_watchdog"]

#: seconds between two listings of the driver's descendants
POLL_S = 0.5
#: seconds a process has to end after SIGTERM before it gets SIGKILL
KILL_AFTER_S = 2.0
_PROC = Path("/proc")

#: a process: its pid and its start time (clock ticks since boot), so that a reused pid is not taken for it
Process = tuple[int, int]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of ``pid``, or None when it is gone or a zombie."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> set[Process]:
    """Every process below ``root`` (children, their children, ...), read from /proc."""
    children: dict[int, list[Process]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found: set[Process] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def _running(processes: set[Process]) -> set[Process]:
    return {(pid, started) for pid, started in processes if (stat := _stat(pid)) is not None and stat[1] == started}


def end_processes(processes: set[Process], *, kill_after: float = KILL_AFTER_S) -> int:
    """SIGTERM each of ``processes`` still running, SIGKILL those left ``kill_after`` seconds later;
    returns how many were running."""
    running = _running(processes)
    for sig, wait in ((signal.SIGTERM, kill_after), (signal.SIGKILL, 0.0)):
        for pid, _ in running:
            with contextlib.suppress(OSError):  # ended meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while (left := _running(running)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not left:
            break
    return len(running)


def watch(driver: int, said: Callable[[], str | None]) -> set[Process]:
    """Track ``driver``'s descendants until ``said`` returns what it said on its pipe ("" once it is
    gone); returns those to end: none when it said ``done``."""
    me = os.getpid()
    tracked: set[Process] = set()
    while (word := said()) is None:
        tracked |= {p for p in descendants(driver) if p[0] != me}
        time.sleep(POLL_S)
    return set() if word == "done" else tracked


def start_watchdog() -> Callable[[], None]:
    """Start the watchdog of this driver; returns what to call once Ray is down ("done": nothing to
    end). Does nothing off Linux."""
    if not sys.platform.startswith("linux"):
        return lambda: None
    process = subprocess.Popen([sys.executable, "-m", "pipeline.engines.ray.watchdog", str(os.getpid())],
                               stdin=subprocess.PIPE, start_new_session=True)  # a Ctrl-C is for the driver

    def done() -> None:
        try:
            process.communicate(b"done\n", timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()

    return done


def main(argv: list[str]) -> int:
    driver = int(argv[0])
    heard: list[str] = []

    def listen() -> None:
        heard.append(sys.stdin.readline().strip())  # "" at EOF: the driver is gone

    threading.Thread(target=listen, daemon=True).start()
    end_processes(watch(driver, lambda: heard[0] if heard else None))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
