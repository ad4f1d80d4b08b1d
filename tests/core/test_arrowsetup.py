"""A run uses the system allocator for Arrow unless the environment chose one."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = ("import pyarrow as pa; from pipeline.core.arrowsetup import configure_arrow; configure_arrow(); "
        "print(pa.default_memory_pool().backend_name)")


def _backend(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"} | env
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True,
                          env=environ).stdout.strip()


def test_the_system_allocator_by_default() -> None:
    assert _backend() == "system"


def test_the_environment_still_chooses() -> None:
    assert _backend(ARROW_DEFAULT_MEMORY_POOL="jemalloc") == "jemalloc"
