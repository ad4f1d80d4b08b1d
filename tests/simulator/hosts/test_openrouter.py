"""The openrouter profile: a required reasoning object, usage with cost, the provider field,
choice-level errors, content_filter, 402 with and without Retry-After, numeric error codes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from pipeline.simulator import Faults, Simulator, SimulatorConfig
from tests.simulator.loopback import MODEL, call, messages, serve


def body(user: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages(user), "reasoning": {"effort": "low"}, **extra}


def test_answers_carry_provider_native_finish_reason_and_usage_with_cost() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert sim.chat_url == sim.root + "/api/v1/chat/completions"
        first = orjson.loads((await call(session, sim.chat_url, body("BUY NOW")))[2])
        second = orjson.loads((await call(session, sim.chat_url, body("hi")))[2])
        assert first["provider"] == "Acme" and first["choices"][0]["native_finish_reason"] == "stop"
        assert first["choices"][0]["message"]["reasoning"]
        usage = second["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        assert cached > 0 and usage["completion_tokens_details"]["reasoning_tokens"] > 0
        expected = ((usage["prompt_tokens"] - cached) * 1.0 + cached * 0.5 + usage["completion_tokens"] * 2.0) / 1e6
        assert usage["cost"] == pytest.approx(expected)

    serve(SimulatorConfig(profile="openrouter", provider_name="Acme", input_price=1.0, cached_input_price=0.5,
                          output_price=2.0), scenario)


def test_reasoning_object_is_required_and_exclude_hides_reasoning() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, raw = await call(session, sim.chat_url, {**body(), "reasoning": None})
        assert status == 400 and orjson.loads(raw) == {"error": {"code": 400, "message": orjson.loads(raw)
                                                                 ["error"]["message"]}}
        assert "reasoning" in orjson.loads(raw)["error"]["message"]
        hidden = orjson.loads((await call(session, sim.chat_url, body(reasoning={"effort": "high",
                                                                                 "exclude": True})))[2])
        assert set(hidden["choices"][0]["message"]) == {"role", "content"}
        status, _, raw = await call(session, sim.chat_url, body(model="nope"))
        assert status == 404 and orjson.loads(raw)["error"]["code"] == 404

    serve(SimulatorConfig(profile="openrouter"), scenario)


def test_choice_error_is_a_200_with_an_error_inside_the_choice_and_not_billed() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, raw = await call(session, sim.chat_url, body("BUY NOW"))
        data = orjson.loads(raw)
        choice = data["choices"][0]
        assert status == 200 and choice["finish_reason"] == "error" and choice["native_finish_reason"] == "error"
        assert set(choice["error"]) >= {"code", "message"} and choice["message"]["content"] == ""
        assert "usage" not in data and sim.stats.billed == 0 and sim.stats.choice_errors == 1

    serve(SimulatorConfig(profile="openrouter", faults=Faults(choice_error=1.0)), scenario)


def test_content_filter_answers_empty_content_and_is_billed() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        data = orjson.loads((await call(session, sim.chat_url, body()))[2])
        choice = data["choices"][0]
        assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] == ""
        assert data["usage"]["cost"] > 0 and sim.stats.billed == 1 and sim.stats.content_filtered == 1

    serve(SimulatorConfig(profile="openrouter", faults=Faults(content_filter=1.0)), scenario)


def test_out_of_credit_is_402_without_retry_after() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, headers, raw = await call(session, sim.chat_url, body())
        assert status == 402 and "Retry-After" not in headers
        assert orjson.loads(raw)["error"]["code"] == 402

    serve(SimulatorConfig(profile="openrouter", out_of_credit=True), scenario)


def test_in_flight_budget_answers_402_with_retry_after() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        results = await asyncio.gather(*(call(session, sim.chat_url, body(str(i))) for i in range(5)))
        refused = [(headers, raw) for status, headers, raw in results if status == 402]
        assert sum(status == 200 for status, _, _ in results) == 2 and len(refused) == 3
        assert all(headers["Retry-After"] == "1" and orjson.loads(raw)["error"]["code"] == 402
                   for headers, raw in refused)
        assert sim.stats.budget_refusals == 3

    serve(SimulatorConfig(profile="openrouter", in_flight_budget=2, latency_ms=100), scenario)
