"""Drift: a policy's violation rate in this run against the rate of earlier runs.

A shift is flagged when it is at least ``threshold`` (absolute: 0.05 = five points) and larger
than chance (a two-proportion z-test at 95 %), so a small nightly sample does not cry wolf. Pure
functions: the counts come from the result store's ``rates`` table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

__all__ = ["Drift", "compare", "describe"]

#: (ok labels, violations) per policy, for one run
Counts = Mapping[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Drift:
    policy: str
    rate: float
    baseline: float
    #: labels behind each rate: this run's, and the earlier runs' together
    labels: int
    baseline_labels: int
    runs: int
    flagged: bool

    @property
    def shift(self) -> float:
        return self.rate - self.baseline

    def as_dict(self) -> dict:
        return {**asdict(self), "shift": round(self.shift, 6), "rate": round(self.rate, 6),
                "baseline": round(self.baseline, 6)}


def compare(current: Counts, history: Sequence[Counts], *, threshold: float, z: float = 1.96) -> list[Drift]:
    """Each policy of ``current`` against the pooled rate of the earlier runs that labelled it.

    >>> [d.flagged for d in compare({"spam": (100, 40)}, [{"spam": (100, 10)}], threshold=0.05)]
    [True]
    >>> [d.flagged for d in compare({"spam": (10, 2)}, [{"spam": (10, 1)}], threshold=0.05)]
    [False]
    """
    found = []
    for policy, (n, v) in sorted(current.items()):
        earlier = [run[policy] for run in history if run.get(policy, (0, 0))[0] > 0]
        n0, v0 = sum(e[0] for e in earlier), sum(e[1] for e in earlier)
        if n == 0 or n0 == 0:
            continue
        p, p0 = v / n, v0 / n0
        pooled = (v + v0) / (n + n0)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / n0))
        significant = abs(p - p0) > z * se if se > 0 else p != p0
        found.append(Drift(policy, p, p0, n, n0, len(earlier), abs(p - p0) >= threshold and significant))
    return found


def describe(drifts: Sequence[Drift]) -> str:
    """The flagged shifts in a few words for the summary line; empty when none.

    >>> describe(compare({"spam": (100, 40)}, [{"spam": (100, 10)}], threshold=0.05))
    'drift: spam 10.0% -> 40.0% (+30.0 pts vs 1 earlier runs)'
    """
    flagged = [d for d in drifts if d.flagged]
    if not flagged:
        return ""
    return "drift: " + ", ".join(f"{d.policy} {d.baseline:.1%} -> {d.rate:.1%} ({d.shift * 100:+.1f} pts vs "
                                 f"{d.runs} earlier runs)" for d in flagged)
