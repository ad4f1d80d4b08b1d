"""The simulator as an aiohttp client sees it: protocol, errors, limits, faults, stats, CLI."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
import pytest

from pipeline.core.records import OutputFormat, Policy
from pipeline.plan.prompt import render_system
from pipeline.simulator import Faults, Simulator, SimulatorConfig, start_simulator

MODEL = "gpt-oss-safeguard-20b-simulator"
SPAM = Policy("spam", "# Spam Policy\n{{OUTPUT_FORMAT}}\nVIOLATES: SP1 scams, SP2 ads, SP3 link farms.\n" * 8)
Scenario = Callable[[Simulator, aiohttp.ClientSession], Awaitable[None]]


def serve(config: SimulatorConfig, scenario: Scenario) -> None:
    """Run ``scenario`` against a fresh in-process simulator."""

    async def go() -> None:
        async with start_simulator(config) as sim, aiohttp.ClientSession() as session:
            await scenario(sim, session)

    asyncio.run(go())


def chat(user: str = "hello there", fmt: OutputFormat = OutputFormat.RATIONALE, **extra: Any) -> dict:
    messages = [{"role": "system", "content": render_system(SPAM, fmt)}, {"role": "user", "content": user}]
    return {"model": MODEL, "messages": messages, **extra}


async def post(
    session: aiohttp.ClientSession, sim: Simulator, body: Any, **kwargs: Any
) -> tuple[int, Any, bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(f"{sim.base_url}/chat/completions", data=data, **kwargs) as resp:
        return resp.status, resp.headers, await resp.read()


def test_models_lists_simulator_names() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        async with session.get(f"{sim.base_url}/models") as resp:
            listing = await resp.json()
        assert listing["object"] == "list"
        assert [m["id"] for m in listing["data"]] == SimulatorConfig().models
        assert all("simulator" in m["id"] and m["owned_by"] == "simulator" for m in listing["data"])

    serve(SimulatorConfig(), scenario)


@pytest.mark.parametrize(
    ("fmt", "hit", "miss"),
    [
        (OutputFormat.BINARY, 1, 0),
        (OutputFormat.CATEGORY, {"violation": 1, "policy_category": "SP2"},
         {"violation": 0, "policy_category": None}),
        (OutputFormat.RATIONALE, "SP2", None),
    ],
)
def test_each_output_format_round_trips(fmt: OutputFormat, hit: Any, miss: Any) -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        answers = []
        for user in ("Great deal, BUY NOW", "nice weather today"):
            status, _, raw = await post(session, sim, chat(user, fmt))
            assert status == 200
            data = orjson.loads(raw)
            assert data["object"] == "chat.completion" and data["model"] == MODEL
            choice = data["choices"][0]
            assert choice["finish_reason"] == "stop" and choice["message"]["reasoning"]
            answers.append(orjson.loads(choice["message"]["content"]))
            usage = data["usage"]
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            assert 0 < usage["completion_tokens_details"]["reasoning_tokens"] < usage["completion_tokens"]
        if fmt is OutputFormat.RATIONALE:
            assert [a["policy_category"] for a in answers] == [hit, miss]
            assert [a["violation"] for a in answers] == [1, 0]
        else:
            assert answers == [hit, miss]

    serve(SimulatorConfig(), scenario)


def test_repeated_system_message_reports_cached_prefix() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        first = orjson.loads((await post(session, sim, chat("one")))[2])["usage"]
        second = orjson.loads((await post(session, sim, chat("two")))[2])["usage"]
        assert first["prompt_tokens_details"]["cached_tokens"] == 0
        cached = second["prompt_tokens_details"]["cached_tokens"]
        assert cached > 0 and cached % 64 == 0 and cached < second["prompt_tokens"]
        assert sim.stats.cached_tokens == cached

    serve(SimulatorConfig(), scenario)


def test_reasoning_field_name_and_usage_are_configurable() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        data = orjson.loads((await post(session, sim, chat()))[2])
        message = data["choices"][0]["message"]
        assert "reasoning_content" in message and "reasoning" not in message
        assert "usage" not in data
        assert sim.stats.billed == 1
        hidden = orjson.loads((await post(session, sim, chat(include_reasoning=False)))[2])
        assert set(hidden["choices"][0]["message"]) == {"role", "content"}

    serve(SimulatorConfig(reasoning_field="reasoning_content", include_usage=False), scenario)


def test_error_paths_answer_openai_style_json() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, raw = await post(session, sim, {**chat(), "model": "gpt-4o"})
        assert status == 404 and orjson.loads(raw)["error"]["code"] == "model_not_found"
        for bad in (b"{not json", {"model": MODEL}, {"model": MODEL, "messages": "hi"},
                    chat(max_tokens=0), chat(reasoning_effort="max"), chat("please [[reject]] this")):
            status, _, raw = await post(session, sim, bad)
            assert status == 400 and {"message", "type", "code"} <= orjson.loads(raw)["error"].keys()
        assert sim.stats.status_counts == {404: 1, 400: 6} and sim.stats.billed == 0
        for effort in (chat(reasoning_effort="high"), chat(reasoning={"effort": "low"}, include_reasoning=True)):
            assert (await post(session, sim, effort))[0] == 200

    serve(SimulatorConfig(), scenario)


def test_api_key_is_required_when_configured() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert (await post(session, sim, chat()))[0] == 401
        assert (await post(session, sim, chat(), headers={"Authorization": "Bearer wrong"}))[0] == 401
        assert (await post(session, sim, chat(), headers={"Authorization": "Bearer s3cret"}))[0] == 200
        modelslab = {"model_id": MODEL, "key": "s3cret", "messages": chat()["messages"]}
        assert (await post(session, sim, modelslab))[0] == 200

    serve(SimulatorConfig(api_key="s3cret"), scenario)


def test_out_of_credit_answers_402() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, raw = await post(session, sim, chat())
        assert status == 402 and orjson.loads(raw)["error"]["code"] == "insufficient_credits"

    serve(SimulatorConfig(out_of_credit=True), scenario)


@pytest.mark.parametrize("style", ["seconds", "http-date", "ms", "none"])
def test_rate_limit_answers_429_with_configured_retry_after(style: str) -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert (await post(session, sim, chat()))[0] == 200
        status, headers, raw = await post(session, sim, chat())
        assert status == 429 and orjson.loads(raw)["error"]["type"] == "rate_limit_exceeded"
        if style == "seconds":
            assert int(headers["Retry-After"]) >= 1
        elif style == "http-date":
            assert parsedate_to_datetime(headers["Retry-After"]).timestamp() >= time.time() - 1
        elif style == "ms":
            assert int(headers["retry-after-ms"]) > 0 and "Retry-After" not in headers
        else:
            assert "Retry-After" not in headers and "retry-after-ms" not in headers
        assert "x-ratelimit-limit-requests" not in headers
        assert sim.stats.rate_limited == 1 and sim.stats.status_counts[429] == 1

    serve(SimulatorConfig(rpm=6, retry_after=style), scenario)


def test_a_quota_storm_refuses_every_request_with_a_long_retry_after_and_no_reset_until_switched_off() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        for _ in range(3):
            status, headers, raw = await post(session, sim, chat())
            assert status == 429 and orjson.loads(raw)["error"]["type"] == "rate_limit_exceeded"
            assert headers["Retry-After"] == "3600" and headers["x-ratelimit-remaining-requests"] == "0"
            assert not any(name.lower().startswith("x-ratelimit-reset") for name in headers)
        assert sim.stats.rate_limited == 3 and sim.stats.billed == 0
        sim.config.quota_storm = None
        assert (await post(session, sim, chat()))[0] == 200

    serve(SimulatorConfig(quota_storm=3600), scenario)


def test_advertised_limits_come_on_every_response() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        _, ok, _ = await post(session, sim, chat())
        assert ok["x-ratelimit-limit-requests"] == "120" and ok["x-ratelimit-limit-tokens"] == "100000"
        assert ok["x-ratelimit-remaining-requests"] == "1"
        assert ok["x-ratelimit-reset-requests"].endswith("ms")
        statuses = [(await post(session, sim, chat()))[0] for _ in range(3)]
        assert 429 in statuses
        _, limited, _ = await post(session, sim, chat())
        assert limited["x-ratelimit-remaining-requests"] == "0" and "x-ratelimit-reset-tokens" in limited

    serve(SimulatorConfig(rpm=120, tpm=100_000, advertise_limits=True), scenario)


def test_token_limit_refuses_once_the_bucket_is_spent() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        statuses = [(await post(session, sim, chat()))[0] for _ in range(4)]
        assert statuses[0] == 200 and 429 in statuses

    serve(SimulatorConfig(tpm=6000), scenario)


@pytest.mark.parametrize("kind", ["reset", "truncated_body", "non_json", "html_error", "error_5xx", "hang"])
def test_transient_faults_are_observable_and_not_billed(kind: str) -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        timeout = aiohttp.ClientTimeout(total=0.3)
        if kind in ("reset", "truncated_body", "hang"):
            expected = {"reset": aiohttp.ClientConnectionError, "truncated_body": aiohttp.ClientPayloadError,
                        "hang": asyncio.TimeoutError}[kind]
            with pytest.raises(expected):
                await post(session, sim, chat(), timeout=timeout)
        else:
            status, headers, raw = await post(session, sim, chat())
            if kind == "non_json":
                assert status == 200
                with pytest.raises(orjson.JSONDecodeError):
                    orjson.loads(raw)
            elif kind == "html_error":
                assert status == 502 and headers["Content-Type"].startswith("text/html")
            else:
                assert status in {500, 502, 503, 504} and "error" in orjson.loads(raw)
        assert sim.stats.faults == {kind: 1}
        assert sim.stats.billed == 0 and sim.stats.prompt_tokens == 0
        sim.config.faults = Faults()  # the next request is answered normally on a fresh connection
        assert (await post(session, sim, chat()))[0] == 200

    serve(SimulatorConfig(faults=Faults(**{kind: 1.0}, hang_seconds=5.0)), scenario)


def test_short_hang_still_answers() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert (await post(session, sim, chat()))[0] == 200
        assert sim.stats.faults == {"hang": 1} and sim.stats.billed == 1

    serve(SimulatorConfig(faults=Faults(hang=1.0, hang_seconds=0.05)), scenario)


@pytest.mark.parametrize("kind", ["junk_output", "refusal", "length_empty"])
def test_model_faults_are_billed(kind: str) -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, raw = await post(session, sim, chat("BUY NOW", max_tokens=2000))
        assert status == 200
        data = orjson.loads(raw)
        choice, usage = data["choices"][0], data["usage"]
        if kind == "length_empty":
            assert choice["finish_reason"] == "length" and choice["message"]["content"] == ""
            assert usage["completion_tokens"] == 2000
        else:
            assert choice["finish_reason"] == "stop"
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(choice["message"]["content"])
        assert sim.stats.billed == 1 and sim.stats.faults == {kind: 1}
        assert sim.stats.prompt_tokens == usage["prompt_tokens"]
        assert sim.stats.completion_tokens == usage["completion_tokens"]

    serve(SimulatorConfig(faults=Faults(**{kind: 1.0})), scenario)


def test_low_max_tokens_ends_with_length_and_no_content() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        data = orjson.loads((await post(session, sim, chat(max_tokens=5)))[2])
        assert data["choices"][0]["finish_reason"] == "length"
        assert data["choices"][0]["message"]["content"] == ""
        assert data["usage"]["completion_tokens"] == 5

    serve(SimulatorConfig(), scenario)


def test_verdicts_stay_deterministic_under_faults() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        seen: dict[str, set[str]] = {"BUY NOW": set(), "hello": set()}
        for i in range(60):
            user = "BUY NOW" if i % 2 else "hello"
            try:
                status, _, raw = await post(session, sim, chat(user, OutputFormat.BINARY))
            except aiohttp.ClientError:
                continue
            if status == 200:
                with contextlib.suppress(orjson.JSONDecodeError):
                    seen[user].add(orjson.loads(raw)["choices"][0]["message"]["content"])
        assert seen == {"BUY NOW": {"1"}, "hello": {"0"}}
        assert sum(sim.stats.faults.values()) > 0

    faults = Faults(error_5xx=0.2, non_json=0.1, reset=0.1, truncated_body=0.1)
    serve(SimulatorConfig(faults=faults), scenario)


def test_stats_count_billed_and_concurrency_and_are_served_as_json() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        results = await asyncio.gather(*(post(session, sim, chat(str(i))) for i in range(8)))
        assert time.monotonic() - started >= 0.03
        await post(session, sim, chat("[[reject]]"))
        assert [r[0] for r in results] == [200] * 8
        assert sim.stats.requests == 9 and sim.stats.billed == 8 and sim.stats.max_in_flight > 1
        async with session.get(sim.base_url.removesuffix("/v1") + "/_simulator/stats") as resp:
            served = await resp.json()
        assert served["billed"] == 8 and served["status_counts"] == {"200": 8, "400": 1}
        assert served["prompt_tokens"] == sim.stats.prompt_tokens
        async with session.post(sim.base_url.removesuffix("/v1") + "/_simulator/reset") as resp:
            assert (await resp.json())["requests"] == 0
        assert sim.stats.requests == 0 and sim.stats.status_counts == {}

    serve(SimulatorConfig(latency_ms=30, jitter_ms=5), scenario)


def test_model_names_must_say_simulator() -> None:
    with pytest.raises(ValueError, match="simulator"):
        Simulator(SimulatorConfig(models=["gpt-oss-safeguard-20b"]))


def test_an_endless_body_streams_a_chunked_200_until_hang_seconds_then_closes_unbilled() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        received = 0
        async with session.post(sim.base_url + "/chat/completions", json=chat()) as response:
            assert response.status == 200 and response.headers["Transfer-Encoding"] == "chunked"
            with pytest.raises(aiohttp.ClientPayloadError):  # the body never ends: it is cut
                async for chunk in response.content.iter_chunked(1 << 16):
                    received += len(chunk)
        assert received > 1 << 20
        assert 0.4 <= time.monotonic() - started < 5.0
        assert sim.stats.faults == {"endless_body": 1} and sim.stats.billed == 0

    serve(SimulatorConfig(faults=Faults(endless_body=1.0, hang_seconds=0.5)), scenario)
