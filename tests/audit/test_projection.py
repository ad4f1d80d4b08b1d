from __future__ import annotations

import pytest

from pipeline.audit.projection import (
    ANSWER_TOKENS,
    ASSUMED_REASONING,
    OutputTokens,
    assumed_output,
    calibrated_output,
    project,
    seconds_at_limits,
)
from pipeline.core.cost import Pricing

PRICES = Pricing(0.075, 0.0375, 0.30)


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_assumed_output_adds_the_answer_to_the_reasoning(effort: str) -> None:
    tokens = assumed_output(effort, "rationale")
    low, expected, high = ASSUMED_REASONING[effort]
    assert tokens.as_tuple() == (low + ANSWER_TOKENS["rationale"], expected + ANSWER_TOKENS["rationale"],
                                 high + ANSWER_TOKENS["rationale"])


def test_more_effort_assumes_more_output() -> None:
    assert assumed_output("low", "binary").expected < assumed_output("medium", "binary").expected \
        < assumed_output("high", "binary").expected


def test_calibrated_output_is_the_measured_mean_with_a_band() -> None:
    tokens = calibrated_output(12_000, 100, "run")
    assert tokens.as_tuple() == pytest.approx((96, 120, 150))


def test_cost_range_orders_low_expected_high() -> None:
    p = project(requests=10, prompt_tokens=7000, prefix_tokens=600, output=OutputTokens(50, 100, 300, "x"),
                pricing=PRICES)
    assert p.cost_usd[1] == pytest.approx((7000 * 0.075 + 1000 * 0.30) / 1e6)
    assert p.cost_usd[0] < p.cost_usd[1] < p.cost_usd[2]
    assert p.completion_tokens == (500, 1000, 3000)


def test_no_requests_cost_nothing() -> None:
    p = project(requests=0, prompt_tokens=0, prefix_tokens=600, output=OutputTokens(1, 2, 3, "x"), pricing=PRICES)
    assert p.cost_usd == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(("rpm", "tpm", "seconds"), [(60, None, 600), (None, 60_000, 3000), (60, 60_000, 3000),
                                                     (None, None, None)])
def test_time_is_set_by_the_tighter_limit(rpm: float | None, tpm: float | None, seconds: float | None) -> None:
    assert seconds_at_limits(requests=600, tokens=3_000_000, rpm=rpm, tpm=tpm) == seconds
