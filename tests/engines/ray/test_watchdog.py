"""The watchdog: a driver's descendants are ended when it dies without saying it is done (no Ray here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.engines.ray.watchdog import descendants, end_processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# a "driver" that starts the watchdog, then a child that ignores SIGTERM (as Ray's agents do, stuck on
# a GCS that is gone) and a grandchild; it prints their pids, then waits (to be killed) or says done
DRIVER = """
import subprocess, sys, time
from pipeline.engines.ray.watchdog import start_watchdog
done = start_watchdog()
stuck = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(p.pid, flush=True); "
         "time.sleep(60)")
child = subprocess.Popen([sys.executable, "-c", stuck], stdout=subprocess.PIPE, text=True)
grandchild = int(child.stdout.readline())
print(child.pid, grandchild, flush=True)
if sys.argv[1] == "done":
    time.sleep(1.0)  # the watchdog has listed them
    done()
    print("said", flush=True)
time.sleep(60)
"""


def _start_driver(tmp_path: Path, how: str) -> tuple[subprocess.Popen, list[int]]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert driver.stdout is not None
    return driver, [int(pid) for pid in driver.stdout.readline().split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.slow
def test_processes_below_a_driver_killed_with_sigkill_end_within_seconds_even_those_ignoring_sigterm(
        tmp_path: Path) -> None:
    driver, pids = _start_driver(tmp_path, "wait")
    try:
        time.sleep(1.0)  # the watchdog lists them twice a second
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=5)
        assert _wait_gone(pids, 6.0) == []
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_driver_that_says_done_has_nothing_ended_by_its_watchdog(tmp_path: Path) -> None:
    driver, pids = _start_driver(tmp_path, "done")
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "said"
        driver.kill()
        driver.wait(timeout=5)
        time.sleep(1.0)
        assert all(_alive(pid) for pid in pids)  # the driver took Ray down itself: not the watchdog's to end
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_descendants_are_children_and_their_children_and_end_processes_ends_them() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
                              "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while not (grandchildren := descendants(child.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        # this process may have others below it (a Ray instance of the cluster tests)
        found = {p for p in descendants(os.getpid()) if p[0] == child.pid} | grandchildren
        pids = {pid for pid, _ in found}
        assert child.pid in pids and len(pids) == 2
        assert end_processes(found, kill_after=1.0) == 2
        child.wait(timeout=5)
        assert _wait_gone(list(pids), 5.0) == []
    finally:
        child.kill()
