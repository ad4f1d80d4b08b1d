"""Helpers for simulator tests: a fresh simulator on 127.0.0.1 and a client session against it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from pipeline.simulator import Simulator, SimulatorConfig, start_simulator

MODEL = "gpt-oss-safeguard-20b-simulator"
POLICY = ("# Spam Policy\nReturn JSON {\"violation\": 0|1, \"policy_category\": ..., \"rationale\": ...}.\n"
          + "VIOLATES: SP1 scams, SP2 ads, SP3 link farms. SAFE: everything else.\n" * 8)
Scenario = Callable[[Simulator, aiohttp.ClientSession], Awaitable[None]]


def serve(config: SimulatorConfig, scenario: Scenario) -> None:
    """Run ``scenario`` against a fresh in-process simulator."""

    async def go() -> None:
        async with start_simulator(config) as sim, aiohttp.ClientSession() as session:
            await scenario(sim, session)

    asyncio.run(go())


def messages(user: str = "hello there", policy: str = POLICY) -> list[dict[str, str]]:
    return [{"role": "system", "content": policy}, {"role": "user", "content": user}]


async def call(session: aiohttp.ClientSession, url: str, body: Any, method: str = "POST",
               **kwargs: Any) -> tuple[int, Any, bytes]:
    """(status, headers, raw body) of one request."""
    data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    async with session.request(method, url, data=data, **kwargs) as resp:
        return resp.status, resp.headers, await resp.read()
