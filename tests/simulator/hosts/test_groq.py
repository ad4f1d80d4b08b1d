"""The groq profile: x-ratelimit-* with a daily request limit and a per-minute token limit, Go-style
resets, retry-after on 429, include_reasoning and reasoning_format exclusive, cached tokens free."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson

from pipeline.simulator import Simulator, SimulatorConfig
from pipeline.simulator.hosts.groq import go_duration
from tests.simulator.loopback import MODEL, call, messages, serve

GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def body(user: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages(user), "reasoning_effort": "low", **extra}


def test_go_durations_look_like_groq_resets() -> None:
    assert [go_duration(s) for s in (179.56, 7.66, 0.0871, 60.0)] == ["2m59.56s", "7.66s", "88ms", "1m0s"]


def test_every_answer_advertises_daily_requests_and_minute_tokens() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        assert sim.chat_url == sim.root + "/openai/v1/chat/completions"
        status, headers, raw = await call(session, sim.chat_url, body(max_completion_tokens=4000))
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "14400"
        assert headers["x-ratelimit-limit-tokens"] == "6000"
        assert headers["x-ratelimit-remaining-requests"] == "14399"
        tokens_used = 6000 - int(headers["x-ratelimit-remaining-tokens"])
        usage = orjson.loads(raw)["usage"]
        assert tokens_used == usage["prompt_tokens"] + usage["completion_tokens"]
        assert GO_DURATION.match(headers["x-ratelimit-reset-requests"])
        assert GO_DURATION.match(headers["x-ratelimit-reset-tokens"])
        second = await call(session, sim.chat_url, body("again"))
        cached = orjson.loads(second[2])["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert cached > 0
        spent = int(headers["x-ratelimit-remaining-tokens"]) - int(second[1]["x-ratelimit-remaining-tokens"])
        total = orjson.loads(second[2])["usage"]
        assert spent <= total["prompt_tokens"] + total["completion_tokens"] - cached + 1  # cached are free

    serve(SimulatorConfig(profile="groq", rpd=14400, tpm=6000), scenario)


def test_over_the_token_limit_answers_429_with_retry_after() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        statuses = []
        for i in range(6):
            status, headers, raw = await call(session, sim.chat_url, body(str(i)))
            statuses.append(status)
            if status == 429:
                assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-remaining-tokens"]
                assert orjson.loads(raw)["error"]["code"] == "rate_limit_exceeded"
        assert statuses[0] == 200 and 429 in statuses and sim.stats.rate_limited >= 1

    serve(SimulatorConfig(profile="groq", tpm=300), scenario)


def test_include_reasoning_and_reasoning_format_together_are_refused() -> None:
    async def scenario(sim: Simulator, session: aiohttp.ClientSession) -> None:
        status, _, raw = await call(session, sim.chat_url, body(include_reasoning=True, reasoning_format="parsed"))
        assert status == 400 and "reasoning_format" in orjson.loads(raw)["error"]["message"]
        hidden = orjson.loads((await call(session, sim.chat_url, body(reasoning_format="hidden")))[2])
        assert "reasoning" not in hidden["choices"][0]["message"]
        shown = orjson.loads((await call(session, sim.chat_url, body(include_reasoning=True)))[2])
        assert shown["choices"][0]["message"]["reasoning"] and shown["x_groq"]["id"]

    serve(SimulatorConfig(profile="groq"), scenario)
