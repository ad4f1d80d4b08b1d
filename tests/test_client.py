from __future__ import annotations

import asyncio
import socket
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from pipeline.client import (
    AiohttpTransport,
    BadResponse,
    FunctionTransport,
    HttpReply,
    TransportError,
    decode_completion,
    error_message,
)
from pipeline.prompt import render_system
from pipeline.providers import build_body, chat_url, request_headers
from pipeline.records import OutputFormat, Policy, Usage
from pipeline.simulator import Faults, Simulator, SimulatorConfig, start_simulator

MODEL = "gpt-oss-safeguard-20b-simulator"
SECRET = "sk-SECRET-do-not-print-7f3a9c"
POLICY = Policy("spam", "# Spam\n{{OUTPUT_FORMAT}}\nVIOLATES: SP1 scams, SP2 ads.\n")


def completion(message: dict[str, Any], **extra: Any) -> bytes:
    data = {"id": "c1", "model": "served-model", "choices": [{"index": 0, "message": message,
                                                               "finish_reason": "stop"}], **extra}
    return orjson.dumps(data)


# ---- decode_completion ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_is_read_from_either_field(field: str) -> None:
    done = decode_completion(completion({"role": "assistant", "content": "1", field: "thinking..."}))
    assert done.content == "1"
    assert done.reasoning == "thinking..."
    assert done.finish_reason == "stop"
    assert done.model == "served-model"


def test_reasoning_field_wins_over_reasoning_content() -> None:
    done = decode_completion(completion({"content": "0", "reasoning": "new", "reasoning_content": "old"}))
    assert done.reasoning == "new"


def test_no_reasoning_is_none() -> None:
    done = decode_completion(completion({"content": "0"}))
    assert done.reasoning is None


def test_usage_with_details() -> None:
    usage = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
             "prompt_tokens_details": {"cached_tokens": 1024},
             "completion_tokens_details": {"reasoning_tokens": 250}}
    done = decode_completion(completion({"content": "0"}, usage=usage))
    assert done.usage == Usage(prompt_tokens=1200, cached_prompt_tokens=1024, completion_tokens=300,
                               reasoning_tokens=250)


def test_usage_without_details_as_vllm_sends_it() -> None:
    usage = {"prompt_tokens": 90, "completion_tokens": 40, "prompt_tokens_details": None}
    done = decode_completion(completion({"content": "0"}, usage=usage))
    assert done.usage == Usage(prompt_tokens=90, completion_tokens=40)
    assert done.usage.server_cost_usd is None


def test_missing_usage_is_none() -> None:
    assert decode_completion(completion({"content": "0"})).usage is None
    assert decode_completion(completion({"content": "0"}, usage=None)).usage is None


def test_openrouter_cost_is_kept() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.0000123}
    done = decode_completion(completion({"content": "0"}, usage=usage))
    assert done.usage is not None
    assert done.usage.server_cost_usd == pytest.approx(0.0000123)


def test_length_finish_with_empty_content() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": ""}, "finish_reason": "length"}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 4096}})
    done = decode_completion(body)
    assert (done.content, done.finish_reason) == ("", "length")
    assert done.usage is not None and done.usage.completion_tokens == 4096
    assert done.model is None


@pytest.mark.parametrize(
    "body",
    [
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        completion({"content": "0"})[:40],
        b'{"choices": []}',
        b'{"object": "chat.completion"}',
        b'{"choices": null}',
        b'{"choices": ["0"]}',
        b'{"choices": [{"message": "0"}]}',
        b"[1, 2]",
        b"upstream busy, please try again later",
        b"",
    ],
    ids=["html", "truncated", "no-choices", "no-choices-key", "null-choices", "string-choice",
         "string-message", "list", "plain-text", "empty"],
)
def test_not_a_chat_completion_is_bad_response(body: bytes) -> None:
    with pytest.raises(BadResponse) as info:
        decode_completion(body)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": "many"}, {"prompt_tokens": 1, "prompt_tokens_details": [1]},
     {"completion_tokens": 1, "completion_tokens_details": "x"}],
)
def test_malformed_usage_counts_as_missing(usage: dict) -> None:
    # the answer itself is fine: keep it, and let the caller estimate the tokens
    done = decode_completion(completion({"content": "0"}, usage=usage))
    assert done.content == "0"
    assert done.usage is None


def test_bad_response_quotes_the_start_of_the_body() -> None:
    with pytest.raises(BadResponse, match="502 Bad Gateway"):
        decode_completion(b"<html>\n<title>502 Bad Gateway</title>\n</html>")


# ---- error_message -------------------------------------------------------------------------------


def test_error_message_from_openai_error_json() -> None:
    body = orjson.dumps({"error": {"message": "Rate limit reached\nfor model x", "type": "rate_limit"}})
    assert error_message(HttpReply(429, {}, body)) == "HTTP 429: Rate limit reached for model x"


def test_error_message_from_string_error() -> None:
    assert error_message(HttpReply(400, {}, b'{"error": "bad request"}')) == "HTTP 400: bad request"


def test_error_message_from_html_is_one_line() -> None:
    html = b"<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center>nginx</center>\n</body></html>"
    message = error_message(HttpReply(502, {}, html))
    assert message.startswith("HTTP 502: ")
    assert "502 Bad Gateway" in message
    assert "\n" not in message


def test_error_message_for_an_empty_body() -> None:
    assert error_message(HttpReply(503, {}, b"")) == "HTTP 503: empty body"


def test_error_message_is_short() -> None:
    body = orjson.dumps({"error": {"message": "x " * 1000}})
    assert len(error_message(HttpReply(500, {}, body))) <= len("HTTP 500: ") + 200
    assert len(error_message(HttpReply(500, {}, b"y" * 10_000))) < 250


# ---- FunctionTransport ---------------------------------------------------------------------------


def test_function_transport_passes_the_body_and_returns_the_reply() -> None:
    seen: list[bytes] = []

    async def handler(body: bytes) -> HttpReply:
        seen.append(body)
        return HttpReply(200, {"x": "1"}, b"ok")

    reply = asyncio.run(FunctionTransport(handler).post(b"{}", timeout=1.0))
    assert (reply.status, reply.body, seen) == (200, b"ok", [b"{}"])


def test_function_transport_timeout_is_a_transport_error() -> None:
    async def handler(body: bytes) -> HttpReply:
        await asyncio.sleep(5)
        raise AssertionError("not reached")

    with pytest.raises(TransportError, match=r"no answer within 0\.05 s"):
        asyncio.run(FunctionTransport(handler).post(b"{}", timeout=0.05))


# ---- AiohttpTransport against the simulator ------------------------------------------------------


def request_body(user: str = "hello there") -> bytes:
    return orjson.dumps(build_body("openai", model=MODEL, system=render_system(POLICY, OutputFormat.RATIONALE),
                                   user=user, reasoning_effort="low", max_tokens=1024,
                                   keep_reasoning=False, api_key=SECRET))


def against(config: SimulatorConfig, scenario: Callable[[Simulator, AiohttpTransport], Awaitable[None]],
            *, key: str = SECRET) -> None:
    async def go() -> None:
        async with start_simulator(config) as sim:
            transport = AiohttpTransport(url=chat_url(sim.base_url), headers=request_headers("openai", key),
                                         connections=4)
            async with transport:
                await scenario(sim, transport)

    asyncio.run(go())


def assert_secret_absent(exc: BaseException) -> None:
    assert SECRET not in str(exc)
    assert SECRET not in repr(exc)
    assert SECRET not in "".join(traceback.format_exception(exc))


def test_a_good_answer_round_trips() -> None:
    async def scenario(sim: Simulator, transport: AiohttpTransport) -> None:
        reply = await transport.post(request_body(), timeout=5.0)
        assert reply.status == 200
        done = decode_completion(reply.body)
        assert done.model == MODEL
        assert done.usage is not None and done.usage.prompt_tokens > 0
        assert orjson.loads(done.content or "")["violation"] in (0, 1)

    against(SimulatorConfig(api_key=SECRET), scenario)


def test_wrong_key_is_an_http_error_not_an_exception() -> None:
    async def scenario(sim: Simulator, transport: AiohttpTransport) -> None:
        reply = await transport.post(request_body(), timeout=5.0)
        assert reply.status == 401
        assert SECRET not in error_message(reply)

    against(SimulatorConfig(api_key="another-key"), scenario)


def test_connection_reset_is_a_transport_error() -> None:
    async def scenario(sim: Simulator, transport: AiohttpTransport) -> None:
        with pytest.raises(TransportError) as info:
            await transport.post(request_body(), timeout=5.0)
        assert "closed the connection" in str(info.value)
        assert_secret_absent(info.value)
        assert sim.stats.faults == {"reset": 1}

    against(SimulatorConfig(api_key=SECRET, faults=Faults(reset=1.0)), scenario)


def test_truncated_body_is_a_transport_error() -> None:
    async def scenario(sim: Simulator, transport: AiohttpTransport) -> None:
        with pytest.raises(TransportError) as info:
            await transport.post(request_body(), timeout=5.0)
        assert_secret_absent(info.value)

    against(SimulatorConfig(api_key=SECRET, faults=Faults(truncated_body=1.0)), scenario)


def test_hang_past_the_timeout_is_a_transport_error() -> None:
    async def scenario(sim: Simulator, transport: AiohttpTransport) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TransportError, match=r"no answer within 0\.2 s") as info:
            await transport.post(request_body(), timeout=0.2)
        assert 0.19 <= loop.time() - started < 1.5
        assert_secret_absent(info.value)

    against(SimulatorConfig(api_key=SECRET, faults=Faults(hang=1.0, hang_seconds=3.0)), scenario)


def test_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def go() -> None:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        async with AiohttpTransport(url=url, headers=request_headers("openai", SECRET), connections=1) as t:
            with pytest.raises(TransportError) as info:
                await t.post(request_body(), timeout=2.0)
        assert f"cannot connect to 127.0.0.1:{port}" in str(info.value)
        assert_secret_absent(info.value)

    asyncio.run(go())


def test_transport_needs_async_with() -> None:
    transport = AiohttpTransport(url="http://127.0.0.1:9/v1/chat/completions", headers={}, connections=1)
    with pytest.raises(AssertionError, match="async with"):
        asyncio.run(transport.post(b"{}", timeout=1.0))


def test_html_error_page_reaches_the_caller_as_a_reply() -> None:
    async def scenario(sim: Simulator, transport: AiohttpTransport) -> None:
        reply = await transport.post(request_body(), timeout=5.0)
        assert reply.status == 502
        assert error_message(reply).startswith("HTTP 502: ")
        with pytest.raises(BadResponse):
            decode_completion(reply.body)

    against(SimulatorConfig(faults=Faults(html_error=1.0)), scenario)
