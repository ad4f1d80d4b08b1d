"""Pure arithmetic of a cost estimate: output tokens per request, cost range, time at a rate limit.

Prompt tokens are counted exactly (`pipeline.core.tokens`); what the model will write is not known
before it writes it, so output tokens come from an assumption table per reasoning effort, or from
the measured averages of a finished run (`Calibration`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.cost import Pricing

#: completion tokens per request, reasoning included: (low, expected, high) per reasoning effort.
#: Short user-generated texts against a 400–600-token policy; reasoning grows with effort and with
#: how close a text is to the policy's boundary. Replace with measured values: --calibrate OUT_DIR.
ASSUMED_REASONING: dict[str, tuple[int, int, int]] = {
    "low": (80, 200, 500),
    "medium": (250, 600, 1500),
    "high": (700, 1600, 4000),
}
#: tokens of the answer itself per output format (added to the reasoning above).
ANSWER_TOKENS: dict[str, int] = {"binary": 1, "category": 16, "rationale": 60, "policy": 16}
#: a calibrated mean is a measurement of other rows: the range around it.
CALIBRATED_RANGE = (0.8, 1.25)


@dataclass(slots=True, frozen=True)
class OutputTokens:
    """Completion tokens per request (low, expected, high) and where the numbers come from."""

    low: float
    expected: float
    high: float
    source: str

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.low, self.expected, self.high)


def assumed_output(effort: str, output_format: str) -> OutputTokens:
    """The assumption table's completion tokens for one effort and output format.

    >>> assumed_output("low", "binary").expected
    201
    """
    answer = ANSWER_TOKENS[output_format]
    low, expected, high = ASSUMED_REASONING[effort]
    return OutputTokens(low + answer, expected + answer, high + answer, f"assumed for effort {effort}")


def calibrated_output(completion_tokens: int, requests: int, source: str) -> OutputTokens:
    """Completion tokens from a finished run: its mean, with `CALIBRATED_RANGE` around it."""
    mean = completion_tokens / requests
    return OutputTokens(mean * CALIBRATED_RANGE[0], mean, mean * CALIBRATED_RANGE[1], source)


@dataclass(slots=True, frozen=True)
class Projection:
    """Tokens and dollars of `requests` calls; ranges are (low, expected, high)."""

    requests: int
    prompt_tokens: int
    completion_tokens: tuple[float, float, float]
    cost_usd: tuple[float, float, float]


def project(*, requests: int, prompt_tokens: int, prefix_tokens: int, output: OutputTokens,
            pricing: Pricing) -> Projection:
    """Cost of `requests` calls with `prompt_tokens` in all.

    `prefix_tokens` is the part of each prompt that repeats on every call (template and policy):
    the low end assumes a host bills it at its cached-input price, the others at the input price.

    >>> p = project(requests=1000, prompt_tokens=600_000, prefix_tokens=500,
    ...             output=OutputTokens(100, 200, 400, "x"), pricing=Pricing(0.075, 0.0375, 0.30))
    >>> [round(c, 5) for c in p.cost_usd]
    [0.05625, 0.105, 0.165]
    """
    cached = min(requests * prefix_tokens, prompt_tokens)
    full_input = prompt_tokens * pricing.input_per_million
    cheap_input = (prompt_tokens - cached) * pricing.input_per_million + cached * pricing.cached_input_per_million
    completions = tuple(requests * c for c in output.as_tuple())
    out = pricing.output_per_million
    costs = (
        (cheap_input + completions[0] * out) / 1e6,
        (full_input + completions[1] * out) / 1e6,
        (full_input + completions[2] * out) / 1e6,
    )
    return Projection(requests, prompt_tokens, completions, costs)  # type: ignore[arg-type]


def seconds_at_limits(*, requests: int, tokens: float, rpm: float | None, tpm: float | None) -> float | None:
    """Seconds `requests` calls of `tokens` tokens in all take at the limits; None when there is none.

    >>> seconds_at_limits(requests=600, tokens=3_000_000, rpm=60, tpm=1_000_000)
    600.0
    """
    minutes = [requests / rpm] if rpm else []
    if tpm:
        minutes.append(tokens / tpm)
    return max(minutes) * 60 if minutes else None
