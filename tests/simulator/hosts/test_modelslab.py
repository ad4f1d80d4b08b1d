"""The modelslab profile as ModelsLab's docs describe it: body model_id and key, 200 status errors,
a per-account queue answered by 429 with ``retry_after`` in the body, processing replies to fetch."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from pipeline.simulator import Faults, Simulator, SimulatorConfig
from tests.simulator.loopback import call, messages, serve

MODEL_ID = "openai-gpt-oss-safeguard-20b"


def body(user: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model_id": MODEL_ID, "messages": messages(user), "max_tokens": 2000, "key": "k", **extra}


def test_answers_on_the_v7_path_in_chat_completion_shape() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert sim.chat_url.endswith("/api/v7/llm/chat/completions")
        status, headers, raw = await call(session, sim.chat_url, body("Great deal, BUY NOW"))
        data = orjson.loads(raw)
        assert status == 200 and data["object"] == "chat.completion" and data["model"] == MODEL_ID
        assert orjson.loads(data["choices"][0]["message"]["content"])["violation"] == 1
        assert data["usage"]["prompt_tokens"] > 0 and "Retry-After" not in headers
        status, _, _ = await call(session, sim.root + "/v1/chat/completions", body())
        assert status == 404  # the OpenAI path is not ModelsLab's

    serve(SimulatorConfig(profile="modelslab", api_key="k"), scenario)


def test_errors_are_status_error_bodies_with_http_200() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        cases = {
            "key": body(key="wrong"),
            "missing key": {k: v for k, v in body().items() if k != "key"},
            "model": body(model_id="gpt-oss-safeguard-20b"),
            "openai model field": {**{k: v for k, v in body().items() if k != "model_id"}, "model": MODEL_ID},
            "messages": body(messages="hi"),
        }
        answers = {}
        for name, request in cases.items():
            status, _, raw = await call(session, sim.chat_url, request)
            answers[name] = (status, orjson.loads(raw))
        assert all(status == 200 and data["status"] == "error" for status, data in answers.values())
        assert "key" in answers["key"][1]["message"].lower() and "invalid" in answers["key"][1]["message"].lower()
        assert answers["missing key"][1] == answers["key"][1]
        assert "model" in answers["model"][1]["message"].lower()
        assert "model_id" in answers["openai model field"][1]["message"]
        assert sim.stats.billed == 0

    serve(SimulatorConfig(profile="modelslab", api_key="k"), scenario)


def test_out_of_credit_is_a_status_error() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, raw = await call(session, sim.chat_url, body())
        data = orjson.loads(raw)
        assert status == 200 and data["status"] == "error" and "credit" in data["message"].lower()

    serve(SimulatorConfig(profile="modelslab", out_of_credit=True), scenario)


def test_served_model_id_is_configurable() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, raw = await call(session, sim.chat_url, body(model_id="openai-gpt-oss-safeguard-120b"))
        assert status == 200 and orjson.loads(raw)["model"] == "openai-gpt-oss-safeguard-120b"

    serve(SimulatorConfig(profile="modelslab", model_id="openai-gpt-oss-safeguard-120b"), scenario)


def test_a_request_over_the_account_queue_gets_429_with_retry_after_in_the_body_only() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        results = await asyncio.gather(*(call(session, sim.chat_url, body(str(i))) for i in range(8)))
        refused = [(headers, orjson.loads(raw)) for status, headers, raw in results if status == 429]
        assert sum(status == 200 for status, _, _ in results) == 5 and len(refused) == 3
        for headers, data in refused:
            assert "Retry-After" not in headers and "retry-after-ms" not in headers
            assert data["status"] == "error" and data["retry_after"] == 2 and "queue" in data["message"]
        assert sim.stats.queue_rejections == 3 and sim.stats.billed == 5
        assert (await call(session, sim.chat_url, body("again")))[0] == 200  # the queue drained

    serve(SimulatorConfig(profile="modelslab", queue=5, queue_retry_after=2, latency_ms=150), scenario)


def test_processing_reply_is_fetched_later_and_billed_once() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, raw = await call(session, sim.chat_url, body("BUY NOW"))
        queued = orjson.loads(raw)
        assert status == 200 and queued["status"] == "processing" and queued["eta"] == 0.3
        assert queued["fetch_result"].startswith(sim.root + "/api/v7/llm/fetch/")
        early = orjson.loads((await call(session, queued["fetch_result"], {"key": "k"}))[2])
        assert early["status"] == "processing"
        wrong_key = orjson.loads((await call(session, queued["fetch_result"], {"key": "nope"}))[2])
        assert wrong_key["status"] == "error"
        await asyncio.sleep(0.35)
        done = [orjson.loads((await call(session, queued["fetch_result"], {"key": "k"}))[2]) for _ in range(2)]
        assert done[0] == done[1] and done[0]["object"] == "chat.completion"
        assert orjson.loads(done[0]["choices"][0]["message"]["content"])["violation"] == 1
        got = orjson.loads((await call(session, queued["fetch_result"], None, method="GET"))[2])
        assert got == done[0]
        assert sim.stats.billed == 1 and sim.stats.processing_replies == 1 and sim.stats.fetches == 5
        unknown = orjson.loads((await call(session, sim.root + "/api/v7/llm/fetch/999", {"key": "k"}))[2])
        assert unknown["status"] == "error"

    serve(SimulatorConfig(profile="modelslab", api_key="k", processing=1.0, processing_eta=0.3), scenario)


def test_rate_limited_fault_uses_the_body_retry_after() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, headers, raw = await call(session, sim.chat_url, body())
        data = orjson.loads(raw)
        assert status == 429 and data["status"] == "error" and data["retry_after"] == 1
        assert "Retry-After" not in headers

    serve(SimulatorConfig(profile="modelslab", faults=Faults(rate_limited=1.0)), scenario)
