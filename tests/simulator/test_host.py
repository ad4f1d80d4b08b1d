"""New faults and o200k billing, over loopback in the default (openai) profile."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from pipeline.simulator import Faults, Simulator, SimulatorConfig, SimulatorStats, harmony
from pipeline.simulator.config import EIGHT_WAY_MIX
from pipeline.simulator.host import Host
from tests.simulator.loopback import MODEL, POLICY, call, messages, serve


def chat(user: str = "hello there", **extra: object) -> dict:
    return {"model": MODEL, "messages": messages(user), **extra}


def test_rate_limited_fault_is_a_429_with_retry_after_1_whatever_the_limits() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, headers, raw = await call(session, sim.chat_url, chat())
        assert status == 429 and headers["Retry-After"] == "1"
        assert orjson.loads(raw)["error"]["code"] == "rate_limit_exceeded"
        assert sim.stats.faults == {"rate_limited": 1} and sim.stats.rate_limited == 0 and sim.stats.billed == 0

    serve(SimulatorConfig(faults=Faults(rate_limited=1.0)), scenario)


def test_error_503_html_is_an_html_page() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, headers, raw = await call(session, sim.chat_url, chat())
        assert status == 503 and headers["Content-Type"].startswith("text/html") and b"503" in raw
        assert sim.stats.billed == 0

    serve(SimulatorConfig(faults=Faults(error_503_html=1.0)), scenario)


def test_content_parts_fault_sends_the_verdict_as_a_list_of_text_parts() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        data = orjson.loads((await call(session, sim.chat_url, chat("BUY NOW")))[2])
        parts = data["choices"][0]["message"]["content"]
        assert isinstance(parts, list) and parts[0]["type"] == "text"
        assert orjson.loads(parts[0]["text"])["violation"] == 1
        assert sim.stats.billed == 1

    serve(SimulatorConfig(faults=Faults(content_parts=1.0)), scenario)


def test_malformed_fields_fault_breaks_a_field_or_the_usage_and_is_billed() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        seen = set()
        for i in range(40):
            data = orjson.loads((await call(session, sim.chat_url, chat(str(i))))[2])
            usage = data["usage"]
            if not isinstance(data["model"], str):
                seen.add("model")
            elif not isinstance(data["choices"][0]["finish_reason"], str):
                seen.add("finish_reason")
            elif usage["prompt_tokens"] >= 3e9:
                seen.add("huge usage")
            else:
                assert usage["completion_tokens"] < 0
                seen.add("negative usage")
        assert seen == {"model", "finish_reason", "huge usage", "negative usage"}
        assert sim.stats.billed == 40 and sim.stats.prompt_tokens < 3e9

    serve(SimulatorConfig(faults=Faults(malformed_fields=1.0)), scenario)


def test_odd_details_fault_sends_a_verdict_with_one_impossible_detail_billed_as_if_it_were_zero() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        seen, billed = set(), {"cached": 0, "reasoning": 0}
        for i in range(40):
            data = orjson.loads((await call(session, sim.chat_url, chat(f"BUY NOW {i}")))[2])
            usage, choice = data["usage"], data["choices"][0]
            content = choice["message"]["content"]
            text = content if isinstance(content, str) else content[0]["text"]
            assert orjson.loads(text)["violation"] == 1  # the verdict itself is fine
            cached = usage["prompt_tokens_details"]["cached_tokens"]
            reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
            if not isinstance(data["model"], str):
                seen.add("model")
            elif not isinstance(choice["finish_reason"], str):
                seen.add("finish_reason")
            elif cached > usage["prompt_tokens"]:
                seen.add("cached over prompt")
            elif reasoning < 0 or reasoning > usage["completion_tokens"]:
                seen.add("reasoning out of range")
            billed["cached"] += cached if cached <= usage["prompt_tokens"] else 0
            billed["reasoning"] += reasoning if 0 <= reasoning <= usage["completion_tokens"] else 0
            seen.add("parts" if isinstance(content, list) else "text")
        assert seen == {"model", "finish_reason", "cached over prompt", "reasoning out of range", "parts", "text"}
        stats = sim.stats
        assert stats.billed == 40 and (stats.cached_tokens, stats.reasoning_tokens) == (billed["cached"],
                                                                                        billed["reasoning"])

    serve(SimulatorConfig(faults=Faults(odd_details=1.0)), scenario)


def test_odd_content_fault_sends_a_billed_answer_whose_content_is_a_number_or_an_object() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        kinds = {type(orjson.loads((await call(session, sim.chat_url, chat(str(i))))[2])["choices"][0]["message"]
                      ["content"]).__name__ for i in range(20)}
        assert kinds == {"int", "dict"} and sim.stats.billed == 20

    serve(SimulatorConfig(faults=Faults(odd_content=1.0)), scenario)


def test_a_host_that_bills_past_max_tokens_bills_more_completion_tokens_than_the_cap() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        data = orjson.loads((await call(session, sim.chat_url, chat("BUY NOW", max_tokens=64)))[2])
        assert data["choices"][0]["finish_reason"] == "stop"  # the answer itself fits the cap
        assert data["usage"]["completion_tokens"] > 1000 and sim.stats.completion_tokens > 1000

    serve(SimulatorConfig(bills_past_max_tokens=1000), scenario)


def test_openrouter_faults_are_allowed_in_any_profile() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        finishes = {orjson.loads((await call(session, sim.chat_url, chat(str(i)))
                                  )[2])["choices"][0]["finish_reason"] for i in range(30)}
        assert finishes == {"error", "content_filter"}

    serve(SimulatorConfig(faults=Faults(choice_error=0.5, content_filter=0.5)), scenario)


def test_o200k_switch_bills_the_harmony_rendering() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        body = chat("Great deal, BUY NOW", reasoning_effort="high")
        data = orjson.loads((await call(session, sim.chat_url, body))[2])
        message, usage = data["choices"][0]["message"], data["usage"]
        assert usage["prompt_tokens"] == harmony.prompt_tokens(POLICY, "Great deal, BUY NOW", "high", "2025-06-28")
        assert usage["completion_tokens_details"]["reasoning_tokens"] == harmony.o200k(message["reasoning"])
        assert usage["completion_tokens"] == harmony.o200k(message["content"]) + harmony.o200k(message["reasoning"])
        low = orjson.loads((await call(session, sim.chat_url, chat("Great deal, BUY NOW")))[2])["usage"]
        assert low["prompt_tokens"] == harmony.prompt_tokens(POLICY, "Great deal, BUY NOW", "medium", "2025-06-28")

    serve(SimulatorConfig(count_tokens="o200k", current_date="2025-06-28"), scenario)


def test_fault_mix_expresses_the_eight_way_twenty_percent() -> None:
    faults = Faults.mix(**EIGHT_WAY_MIX, hang_seconds=5)
    assert faults.total() == pytest.approx(0.20) and faults.rate_limited == 0.05 and faults.hang_seconds == 5
    with pytest.raises(ValueError, match="unknown"):
        Faults.mix(teapot=0.1)
    with pytest.raises(ValueError, match="more than 1"):
        Faults.mix(reset=0.7, hang=0.4)


def test_eight_way_mix_draws_each_kind_near_its_share() -> None:
    stats = SimulatorStats()
    host = Host(SimulatorConfig(faults=Faults.mix(**EIGHT_WAY_MIX)), stats)
    draws = [host.draw_fault() for _ in range(20_000)]
    share = {kind: count / len(draws) for kind, count in stats.faults.items()}
    assert share == pytest.approx(EIGHT_WAY_MIX, abs=0.006)
    assert draws.count(None) / len(draws) == pytest.approx(0.8, abs=0.01)


def test_answer_templates_answer_a_policy_in_its_own_format_and_others_as_before() -> None:
    own = "Spam Policy (#SP)\nLabel SP0-SP4.\nLABEL FORMAT\nD-SP#, R-SP#"
    template = ("Spam Policy (#SP)", "D-{rule}, R-SP0 ({keyword})", "D-SP0, R-SP0")

    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        answers = []
        for policy, user in ((own, "click here now"), (own, "hello"), (POLICY, "click here now")):
            status, _, raw = await call(session, sim.chat_url, {"model": MODEL, "messages": messages(user, policy)})
            assert status == 200
            answers.append(orjson.loads(raw)["choices"][0]["message"]["content"])
        assert answers[:2] == ["D-SP3, R-SP0 (click here)", "D-SP0, R-SP0"]
        assert orjson.loads(answers[2])["violation"] == 1  # a policy the template does not name: JSON as before
        assert sim.stats.system_messages == [own, POLICY]

    serve(SimulatorConfig(answer_templates=[template]), scenario)


def test_an_answer_template_needs_a_phrase_and_both_answers() -> None:
    with pytest.raises(ValueError, match="answer template"):
        SimulatorConfig(answer_templates=[("", "a", "b")]).validate()
