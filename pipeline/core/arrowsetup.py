"""Arrow settings for a long local run.

Arrow's default allocator (mimalloc in the pyarrow wheels) keeps the pages of every Parquet batch
it has decoded; the system allocator gives them back: ~45 MB less at the peak of the 100 k-row
memory benchmark, at the same speed (BENCHMARKS.md). ``ARROW_DEFAULT_MEMORY_POOL`` set in the
environment still wins.
"""

from __future__ import annotations

import os

import pyarrow as pa


def configure_arrow() -> None:
    """Use the system allocator unless the environment chose one; call before reading any input."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())
