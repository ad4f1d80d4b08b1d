from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.cost import PRICING_FILE, Pricing, PricingError, lookup_pricing, model_size
from pipeline.core.records import Usage

M = 1_000_000

# ---- arithmetic ----------------------------------------------------------------------------------


def test_one_million_prompt_tokens_at_list_price() -> None:
    assert Pricing(0.075, 0.037, 0.30).cost(Usage(prompt_tokens=M)) == pytest.approx(0.075)


def test_one_million_output_tokens_at_list_price() -> None:
    assert Pricing(0.075, 0.037, 0.30).cost(Usage(completion_tokens=M)) == pytest.approx(0.30)


def test_cached_prompt_tokens_are_billed_at_the_cached_price_only() -> None:
    pricing = Pricing(0.075, 0.037, 0.30)
    all_cached = Usage(prompt_tokens=M, cached_prompt_tokens=M)
    assert pricing.cost(all_cached) == pytest.approx(0.037)
    half = Usage(prompt_tokens=M, cached_prompt_tokens=M // 2)
    assert pricing.cost(half) == pytest.approx(0.075 / 2 + 0.037 / 2)


def test_input_cached_and_output_add_up() -> None:
    usage = Usage(prompt_tokens=1000, cached_prompt_tokens=500, completion_tokens=100)
    # 500 x 0.075 + 500 x 0.037 + 100 x 0.30 = 86 dollars per million
    assert Pricing(0.075, 0.037, 0.30).cost(usage) == pytest.approx(86e-6)


def test_reasoning_tokens_are_not_billed_twice() -> None:
    pricing = Pricing(0.075, 0.075, 0.30)
    with_breakdown = Usage(prompt_tokens=10, completion_tokens=200, reasoning_tokens=150)
    without = Usage(prompt_tokens=10, completion_tokens=200)
    assert pricing.cost(with_breakdown) == pricing.cost(without)


def test_the_mean_price_is_not_a_per_call_price() -> None:
    # "$0.1875" on one host page is (0.075 + 0.30) / 2: a call costs by its token counts.
    cost = Pricing(0.075, 0.075, 0.30).cost(Usage(prompt_tokens=1000, completion_tokens=10))
    assert cost == pytest.approx((1000 * 0.075 + 10 * 0.30) / M)
    assert cost != pytest.approx(0.1875)


def test_empty_usage_costs_nothing() -> None:
    assert Pricing(0.15, 0.15, 0.60).cost(Usage()) == 0.0


def test_server_cost_does_not_change_our_arithmetic() -> None:
    pricing = Pricing(0.075, 0.075, 0.30)
    assert pricing.cost(Usage(prompt_tokens=M, server_cost_usd=9.0)) == pytest.approx(0.075)


def test_estimate_assumes_no_cache() -> None:
    pricing = Pricing(0.075, 0.0, 0.30)
    assert pricing.estimate(prompt_tokens=M, completion_tokens=M) == pytest.approx(0.375)


def test_as_dict_has_the_report_keys() -> None:
    assert Pricing(0.1, 0.05, 0.4).as_dict() == {
        "input_per_million": 0.1, "cached_input_per_million": 0.05, "output_per_million": 0.4,
    }


# ---- table lookup --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("openai/gpt-oss-safeguard-20b", "20b"),
        ("openai/gpt-oss-safeguard-120b", "120b"),
        ("GPT-OSS-SAFEGUARD-120B", "120b"),
        ("gpt-oss-safeguard-20b-simulator", "20b"),
        ("my-finetune", "20b"),
    ],
)
def test_model_size_from_the_name(model: str, size: str) -> None:
    assert model_size(model) == size


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("openrouter", "openai/gpt-oss-safeguard-20b", Pricing(0.075, 0.075, 0.30)),
        ("openrouter", "openai/gpt-oss-safeguard-120b", Pricing(0.15, 0.15, 0.60)),
        ("groq", "openai/gpt-oss-safeguard-20b", Pricing(0.075, 0.0375, 0.30)),  # cached: 50 % off
        ("groq", "openai/gpt-oss-safeguard-120b", Pricing(0.15, 0.075, 0.60)),
        ("modelslab", "openai-gpt-oss-safeguard-20b", Pricing(0.075, 0.075, 0.30)),
        ("modelslab", "gpt-oss-safeguard-120b", Pricing(0.15, 0.15, 0.60)),
        ("openai", "openai/gpt-oss-safeguard-20b", Pricing(0.075, 0.075, 0.30)),
        ("ollama", "gpt-oss-safeguard:20b", Pricing(0.075, 0.075, 0.30)),
        ("simulator", "gpt-oss-safeguard-120b-simulator", Pricing(0.15, 0.15, 0.60)),
    ],
)
def test_table_price_per_provider_and_size(provider: str, model: str, expected: Pricing) -> None:
    assert lookup_pricing(provider=provider, model=model) == expected


def test_shipped_table_is_the_default() -> None:
    assert PRICING_FILE.name == "pricing.toml" and PRICING_FILE.is_file()


def test_overrides_replace_table_prices() -> None:
    pricing = lookup_pricing(provider="groq", model="gpt-oss-safeguard-20b", input_per_million=1.0,
                             cached_input_per_million=0.5, output_per_million=2.0)
    assert pricing == Pricing(1.0, 0.5, 2.0)


def test_output_override_keeps_table_input_and_cached_prices() -> None:
    pricing = lookup_pricing(provider="groq", model="gpt-oss-safeguard-20b", output_per_million=0.0)
    assert pricing == Pricing(0.075, 0.0375, 0.0)


def test_input_override_without_cached_price_bills_cache_at_the_new_input_price() -> None:
    pricing = lookup_pricing(provider="groq", model="gpt-oss-safeguard-20b", input_per_million=0.2)
    assert pricing == Pricing(0.2, 0.2, 0.30)


def test_zero_prices_are_kept() -> None:
    pricing = lookup_pricing(provider="openai", model="gpt-oss-safeguard-20b", input_per_million=0,
                             cached_input_per_million=0, output_per_million=0)
    assert pricing == Pricing(0.0, 0.0, 0.0)
    assert pricing.cost(Usage(prompt_tokens=M, completion_tokens=M)) == 0.0


def test_unknown_provider_without_prices_is_an_error() -> None:
    with pytest.raises(PricingError) as info:
        lookup_pricing(provider="acme", model="gpt-oss-safeguard-20b")
    message = str(info.value)
    assert "acme" in message and "gpt-oss-safeguard-20b" in message
    assert "input_per_million" in message


def test_unknown_provider_with_configured_prices_is_fine() -> None:
    pricing = lookup_pricing(provider="acme", model="m", input_per_million=0.5, output_per_million=1.5)
    assert pricing == Pricing(0.5, 0.5, 1.5)


def test_half_a_configured_price_is_still_an_error() -> None:
    with pytest.raises(PricingError):
        lookup_pricing(provider="acme", model="m", input_per_million=0.5)


def test_custom_table(tmp_path: Path) -> None:
    table = tmp_path / "prices.toml"
    table.write_text("[acme.120b]\ninput_per_million = 1\noutput_per_million = 3\n")
    assert lookup_pricing(provider="acme", model="x-120b", table_path=table) == Pricing(1.0, 1.0, 3.0)
    with pytest.raises(PricingError, match=r"prices\.toml"):
        lookup_pricing(provider="acme", model="x-20b", table_path=table)


def test_batch_discount_comes_from_the_pricing_table_and_halves_every_price() -> None:
    from pipeline.core.cost import batch_discount

    assert batch_discount(provider="groq", model="openai/gpt-oss-safeguard-20b") == 0.5
    assert batch_discount(provider="openrouter", model="openai/gpt-oss-safeguard-20b") == 0.0
    assert batch_discount(provider="unknown", model="m") == 0.0
    pricing = lookup_pricing(provider="groq", model="openai/gpt-oss-safeguard-120b")
    half = pricing.discounted(0.5)
    usage = Usage(prompt_tokens=1000, cached_prompt_tokens=200, completion_tokens=300)
    assert half.cost(usage) == pytest.approx(pricing.cost(usage) / 2)


def test_a_batch_discount_outside_0_to_1_is_a_pricing_error(tmp_path) -> None:
    from pipeline.core.cost import batch_discount

    table = tmp_path / "pricing.toml"
    table.write_text("[groq.20b]\ninput_per_million = 1\noutput_per_million = 1\nbatch_discount = 1.5\n")
    with pytest.raises(PricingError, match="batch_discount"):
        batch_discount(provider="groq", model="x-20b", table_path=table)
