"""Pure cost arithmetic: prices per million tokens applied to the server's usage."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.records import Usage

#: the price table shipped inside the package (``configs/pricing.toml`` in the repository links to it).
PRICING_FILE = resources.files("pipeline") / "builtin" / "pricing.toml"


class PricingError(UserError):
    """No price known for a provider/model and none configured."""


@dataclass(slots=True, frozen=True)
class Pricing:
    """US dollars per 1 M tokens. Cached input is the part of the prompt the host served from cache."""

    input_per_million: float
    cached_input_per_million: float
    output_per_million: float

    def cost(self, usage: Usage) -> float:
        """Dollars for one usage record: input, cached input and output billed separately.

        >>> Pricing(0.075, 0.037, 0.30).cost(Usage(prompt_tokens=1000, cached_prompt_tokens=500,
        ...                                         completion_tokens=100))
        8.6e-05
        """
        uncached = usage.prompt_tokens - usage.cached_prompt_tokens
        dollars = (
            uncached * self.input_per_million
            + usage.cached_prompt_tokens * self.cached_input_per_million
            + usage.completion_tokens * self.output_per_million
        )
        return round(dollars / 1_000_000, 12)

    def estimate(self, *, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for a call not yet made (no cache assumed)."""
        dollars = prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        return dollars / 1_000_000

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def discounted(self, discount: float) -> Pricing:
        """These prices less a share (0.5 = half price), as batch APIs bill.

        >>> Pricing(0.1, 0.1, 0.4).discounted(0.5)
        Pricing(input_per_million=0.05, cached_input_per_million=0.05, output_per_million=0.2)
        """
        keep = 1.0 - discount
        return Pricing(self.input_per_million * keep, self.cached_input_per_million * keep,
                       self.output_per_million * keep)


def batch_discount(*, provider: str, model: str, table_path: Path = PRICING_FILE) -> float:
    """The share batch requests are cheaper by (``batch_discount`` in the pricing table; 0 when none)."""
    table = tomllib.loads(table_path.read_text(encoding="utf-8"))
    discount = table.get(provider, {}).get(model_size(model), {}).get("batch_discount", 0.0)
    if not isinstance(discount, int | float) or not 0.0 <= discount < 1.0:
        raise PricingError(f"{table_path.name}: '{provider}.{model_size(model)}.batch_discount' must be within 0..1")
    return float(discount)


def model_size(model: str) -> str:
    """'20b' or '120b' from a model name such as 'openai/gpt-oss-safeguard-120b'."""
    return "120b" if "120b" in model.lower() else "20b"


def lookup_pricing(
    *,
    provider: str,
    model: str,
    input_per_million: float | None = None,
    cached_input_per_million: float | None = None,
    output_per_million: float | None = None,
    table_path: Path | Traversable = PRICING_FILE,
) -> Pricing:
    """The pricing table's entry for provider + model size, with any configured price on top."""
    table = tomllib.loads(table_path.read_text(encoding="utf-8"))
    entry = table.get(provider, {}).get(model_size(model), {})
    inp = input_per_million if input_per_million is not None else entry.get("input_per_million")
    out = output_per_million if output_per_million is not None else entry.get("output_per_million")
    if inp is None or out is None:
        raise PricingError(
            f"no price for provider '{provider}' model '{model}' in {table_path.name}; "
            "set [pricing] input_per_million and output_per_million"
        )
    if cached_input_per_million is not None:
        cached = cached_input_per_million
    else:
        cached = entry.get("cached_input_per_million", inp) if input_per_million is None else inp
    return Pricing(float(inp), float(cached), float(out))


def gpu_cost(*, gpu_hour_usd: float, wall_seconds: float, labels: int) -> dict[str, float | None]:
    """Self-hosted cost: the GPUs' hourly price times the wall time, per 1,000 labels.

    >>> gpu_cost(gpu_hour_usd=2.0, wall_seconds=1800, labels=10_000)
    {'gpu_hour_usd': 2.0, 'wall_seconds': 1800, 'cost_usd': 1.0, 'per_1000_labels': 0.1}
    """
    dollars = gpu_hour_usd * wall_seconds / 3600
    return {"gpu_hour_usd": gpu_hour_usd, "wall_seconds": wall_seconds, "cost_usd": round(dollars, 8),
            "per_1000_labels": round(dollars / labels * 1000, 8) if labels else None}
