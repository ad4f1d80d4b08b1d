"""Uniform, reproducible sampling of input rows, and what a sample says about the whole input.

A row is in the sample when a hash of its row number and the seed falls below the sampling rate:
each row is decided on its own (streaming, no memory, the same rows after a resume), the same seed
gives the same rows, another seed other ones. Row numbers, not ids, are hashed: ids may repeat.
Pure functions, no IO.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

import numpy as np

from pipeline.core.intervals import wilson

__all__ = ["chosen", "sample_rate", "sample_summary", "scale_count", "scale_total", "text_digest", "text_shares"]

_SCALE = float(1 << 64)


def sample_rate(sample: float, total_rows: int | None) -> float:
    """The probability of keeping a row: ``sample`` itself when a fraction, else rows / total rows.

    Raises ValueError when a row count is asked of an input whose size is unknown.

    >>> sample_rate(0.25, None), sample_rate(100, 1000), sample_rate(5000, 1000)
    (0.25, 0.1, 1.0)
    """
    if sample < 1:
        return sample
    if total_rows is None:
        raise ValueError("a sample of N rows needs the input's row count, unknown here (compressed or very "
                         "large JSON Lines/CSV): give a fraction instead, e.g. --sample 0.01")
    return 1.0 if total_rows == 0 else min(1.0, sample / total_rows)


def chosen(row_number: int, *, seed: int, rate: float) -> bool:
    """Whether input row ``row_number`` is in the sample of ``seed`` at ``rate``.

    >>> sum(chosen(n, seed=1, rate=0.1) for n in range(10_000))
    997
    """
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}:{row_number}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / _SCALE < rate


def scale_count(successes: int, sampled: int, total: int, z: float = 1.96) -> dict[str, float] | None:
    """A count in the sample scaled to the whole input, with a Wilson interval (95 % by default).

    >>> scale_count(10, 100, 1000)
    {'estimate': 100.0, 'low': 58, 'high': 171, 'rate': 0.1}
    """
    interval = wilson(successes, sampled, z)
    if interval is None:
        return None
    p = successes / sampled
    centre, half = (interval[0] + interval[1]) / 2, (interval[1] - interval[0]) / 2
    # the finite population correction: a sample of the whole input has no sampling error
    fpc = math.sqrt(max(0.0, (total - sampled) / (total - 1))) if total > 1 else 0.0
    low, high = (p, p) if fpc == 0.0 else (max(0.0, centre - half * fpc), min(1.0, centre + half * fpc))
    return {"estimate": round(p * total, 1), "low": round(low * total), "high": round(high * total),
            "rate": round(p, 6)}


def text_digest(text: str | None) -> int:
    """A 64-bit digest of a row's text as it decides duplicates (already normalised by the caller)."""
    data = (text or "").encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def text_shares(digests: Iterable[int]) -> np.ndarray:
    """For each row, 1 / the number of rows of the input with the same text.

    A text is paid once however often it appears, so the whole input costs the sum over its rows of
    (cost of the row's call) × (its share): a sample scaled that way counts the input's duplicates,
    not only those that fell into the sample.

    >>> text_shares([1, 2, 1, 1]).tolist()
    [0.3333333333333333, 1.0, 0.3333333333333333, 0.3333333333333333]
    """
    array = np.fromiter(digests, dtype=np.int64)
    if not len(array):
        return np.zeros(0)
    _, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def scale_total(total_sampled: float, sum_squares: float, sampled: int, total: int,
                z: float = 1.96) -> dict[str, float] | None:
    """A per-row amount (cost) summed over the sample, scaled to the whole input with a normal interval.

    ``sum_squares`` is the sum over sampled rows of the amount squared.

    >>> scale_total(10.0, 10.0, 10, 100)  # every row cost the same: no spread
    {'estimate': 100.0, 'low': 100.0, 'high': 100.0}
    """
    if sampled == 0:
        return None
    mean = total_sampled / sampled
    variance = max(0.0, (sum_squares - sampled * mean * mean) / (sampled - 1)) if sampled > 1 else 0.0
    fpc = (total - sampled) / (total - 1) if total > 1 else 0.0
    half = z * math.sqrt(variance / sampled * max(0.0, fpc)) * total
    estimate = mean * total
    return {"estimate": round(estimate, 8), "low": round(max(0.0, estimate - half), 8),
            "high": round(estimate + half, 8)}


def sample_summary(*, total_rows: int, sampled_rows: int, seed: int, rate: float,
                   violations: Mapping[str, Mapping[str, int]], cost_usd: float,
                   cost_sum_squares: float) -> dict:
    """The report's ``sample`` section: what was labelled, and counts and cost scaled to every row."""
    per_policy = {}
    for policy, counts in sorted(violations.items()):
        ok = sum(counts.values())
        per_policy[policy] = {"labelled_ok": ok, "violations": counts.get("1", 0),
                              "violations_in_input": scale_count(counts.get("1", 0), ok, total_rows)}
    return {
        "seed": seed, "rate": rate, "input_rows": total_rows, "sampled_rows": sampled_rows,
        "cost_usd_in_input": scale_total(cost_usd, cost_sum_squares, sampled_rows, total_rows),
        "per_policy": per_policy,
    }
