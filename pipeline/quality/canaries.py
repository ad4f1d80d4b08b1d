"""Canaries: texts with a known verdict per policy, sent fresh with every run to catch a changed model.

A canary file is any input file (JSON Lines, CSV, Parquet) with the columns ``text``, ``policy``
and ``violation`` (0 or 1). Canaries never go through the result store (a cached answer proves
nothing about today's model) and never reach the label shards; their answers go to
``OUT/canaries.parquet`` and their cost to the cost report. A wrong verdict ends the run with
`pipeline.core.exitcodes.EXIT_CANARY`. Parsing and scoring are pure; `read_canaries` is the file edge.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import UserError

__all__ = ["Canary", "CanaryAnswer", "CanaryError", "parse_canaries", "read_canaries", "score"]

#: what a canary text is shown as in reports
SHOWN_CHARS = 200


class CanaryError(UserError):
    """A canary file the run cannot use (one line, names the file and row)."""


@dataclass(frozen=True, slots=True)
class Canary:
    index: int
    where: str  # file and row, for messages
    policy: str
    text: str
    expected: int


@dataclass(frozen=True, slots=True)
class CanaryAnswer:
    status: str
    violation: int | None


_VERDICTS = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}


def parse_canaries(rows: Iterable[tuple[str, str | None, Any, Any]],
                   policies: Collection[str]) -> tuple[list[Canary], int]:
    """Canaries from (where, text, policy, violation) rows; returns them and how many name other policies.

    >>> parse_canaries([("c:0", "buy now", "spam", "1"), ("c:1", "hi", "self_harm", 0)], {"spam"})
    ([Canary(index=0, where='c:0', policy='spam', text='buy now', expected=1)], 1)
    """
    canaries: list[Canary] = []
    ignored = 0
    for where, text, policy, violation in rows:
        if policy is None or str(policy).strip() == "":
            raise CanaryError(f"{where}: no policy")
        if not text or not text.strip():
            raise CanaryError(f"{where}: empty text")
        expected = _VERDICTS.get(str(violation).strip().lower()) if violation is not None else None
        if expected is None:
            raise CanaryError(f"{where}: violation must be 0 or 1, got {violation!r}")
        if str(policy) not in policies:
            ignored += 1
            continue
        canaries.append(Canary(len(canaries), where, str(policy), text, expected))
    return canaries, ignored


def score(canaries: Sequence[Canary], answers: Mapping[int, CanaryAnswer]) -> dict[str, Any]:
    """Passed, wrong and unanswered canaries, in all and per policy, with the wrong ones listed.

    A canary without an ``ok`` answer (the host failed, the run stopped) is unanswered, not wrong.

    >>> c = [Canary(0, "c:0", "spam", "buy now", 1), Canary(1, "c:1", "spam", "hello", 0)]
    >>> s = score(c, {0: CanaryAnswer("ok", 0), 1: CanaryAnswer("failed", None)})
    >>> s["passed"], s["wrong"], s["unanswered"], s["failures"][0]["got"]
    (0, 1, 1, 0)
    """
    summary: dict[str, Any] = {"total": len(canaries), "passed": 0, "wrong": 0, "unanswered": 0,
                               "per_policy": {}, "failures": []}
    for canary in canaries:
        answer = answers.get(canary.index)
        policy = summary["per_policy"].setdefault(canary.policy, {"total": 0, "passed": 0, "wrong": 0,
                                                                  "unanswered": 0})
        policy["total"] += 1
        if answer is None or answer.status != "ok" or answer.violation is None:
            outcome = "unanswered"
        elif answer.violation == canary.expected:
            outcome = "passed"
        else:
            outcome = "wrong"
            summary["failures"].append({"where": canary.where, "policy": canary.policy,
                                        "text": canary.text[:SHOWN_CHARS], "expected": canary.expected,
                                        "got": answer.violation})
        policy[outcome] += 1
        summary[outcome] += 1
    return summary


def read_canaries(path: str, policies: Collection[str]) -> tuple[list[Canary], int]:
    """The canaries of a file for these policies (see `parse_canaries`); InputError/CanaryError on a bad file."""
    from pipeline.readers import open_inputs

    inputs = open_inputs([path], text_column="text", keep_columns=["policy", "violation"])

    def rows() -> Iterable[tuple[str, str | None, Any, Any]]:
        for batch in inputs.batches(batch_size=1024):
            kept = batch.kept or [[None] * len(batch), [None] * len(batch)]
            for i, (row_id, text) in enumerate(zip(batch.ids, batch.texts, strict=True)):
                if batch.errors is not None and batch.errors[i] is not None:
                    raise CanaryError(batch.errors[i])
                yield f"{path} row {row_id}", text, kept[0][i], kept[1][i]

    canaries, ignored = parse_canaries(rows(), policies)
    if not canaries and not ignored:
        raise CanaryError(f"{path}: no canaries")
    return canaries, ignored
