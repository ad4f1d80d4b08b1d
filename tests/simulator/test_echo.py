"""A host that leaks the caller's key: every reply repeats it, in every encoding, in every field."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from support import LEAKED_KEY, SIM_MODEL, key_spellings

from pipeline.core.records import OutputFormat, Policy
from pipeline.plan.prompt import render_system
from pipeline.simulator import Faults, SimulatorConfig, start_simulator

SPAM = Policy("spam", "# Spam Policy\n{{OUTPUT_FORMAT}}\nVIOLATES: SP1 scams, SP2 ads (buy now).\n")
AUTH = {"Authorization": f"Bearer {LEAKED_KEY}"}


def exchange(user: str, *, fmt: OutputFormat = OutputFormat.RATIONALE, path: str = "/chat/completions",
             **faults: float) -> tuple[int, Any, bytes]:
    """Status, headers and raw body of one request to an echoing simulator."""
    body = {"model": SIM_MODEL, "messages": [{"role": "system", "content": render_system(SPAM, fmt)},
                                             {"role": "user", "content": user}]}

    async def go() -> tuple[int, Any, bytes]:
        config = SimulatorConfig(api_key=LEAKED_KEY, echo_key=True, faults=Faults(**faults))
        async with start_simulator(config) as sim, aiohttp.ClientSession(headers=AUTH) as session:
            if path == "/models":
                async with session.get(sim.base_url + path) as resp:
                    return resp.status, resp.headers, await resp.read()
            async with session.post(sim.base_url + path, json=body) as resp:
                return resp.status, resp.headers, await resp.read()

    return asyncio.run(go())


def every_spelling_in(text: str) -> bool:
    return all(form in text for form in key_spellings(LEAKED_KEY).values())


def test_the_key_is_json_escaped_in_model_provider_and_finish_reason() -> None:
    status, headers, raw = exchange("buy now")
    assert status == 200
    escaped = LEAKED_KEY.replace("/", "\\/")
    assert f'"model":"{SIM_MODEL} {escaped}"'.encode() in raw
    assert LEAKED_KEY.encode() not in raw.split(b'"choices"')[0]  # only the decoded reply shows it
    answer = orjson.loads(raw)
    choice = answer["choices"][0]
    assert answer["model"].endswith(LEAKED_KEY) and answer["provider"].endswith(LEAKED_KEY)
    assert choice["finish_reason"] == f"stop {LEAKED_KEY}"
    assert headers["x-debug-authorization"] == LEAKED_KEY


def test_the_verdict_reasoning_and_errors_repeat_every_spelling_of_the_key() -> None:
    _, _, raw = exchange("buy now")
    message = orjson.loads(raw)["choices"][0]["message"]
    verdict = orjson.loads(message["content"])
    assert verdict["violation"] == 1 and LEAKED_KEY in verdict["rationale"]  # decoded from JSON escapes
    assert every_spelling_in(verdict["rationale"]) and every_spelling_in(message["reasoning"])
    status, _, raw = exchange("[[reject]]")
    assert status == 400 and every_spelling_in(orjson.loads(raw)["error"]["message"])
    status, _, raw = exchange("hello", html_error=1.0)
    assert status == 502 and raw.startswith(b"<html>") and every_spelling_in(raw.decode())
    _, _, raw = exchange("hello", fmt=OutputFormat.BINARY)
    assert every_spelling_in(orjson.loads(raw)["choices"][0]["message"]["content"])


def test_the_model_list_names_the_key() -> None:
    _, _, raw = exchange("", path="/models")
    assert LEAKED_KEY in [m["id"].split()[0] for m in orjson.loads(raw)["data"]]


def test_echo_key_needs_the_key_it_echoes() -> None:
    with pytest.raises(ValueError, match="api_key"):
        SimulatorConfig(echo_key=True).validate()
