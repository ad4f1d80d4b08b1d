"""The HTTP edge: FunctionTransport and AiohttpTransport against the simulator over loopback."""

from __future__ import annotations

import asyncio
import socket
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from support import make_config, run_pipeline, serve_app, write_jsonl

from pipeline.call.answers import decode_completion, read_reply
from pipeline.call.client import AiohttpTransport, FunctionTransport, HttpReply, TransportError
from pipeline.config.providers import build_body, chat_url, request_headers
from pipeline.core.records import OutputFormat, Policy
from pipeline.plan.prompt import render_system
from pipeline.ratecontrol import AttemptKind
from pipeline.simulator import Faults, Simulator, SimulatorConfig, start_simulator

MODEL = "gpt-oss-safeguard-20b-simulator"
SECRET = "sk-SECRET-do-not-print-7f3a9c"
POLICY = Policy("spam", "# Spam\n{{OUTPUT_FORMAT}}\nVIOLATES: SP1 scams, SP2 ads.\n")


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
        attempt = read_reply(reply.status, reply.headers, reply.body, now=0.0).attempt
        assert attempt.kind is AttemptKind.FATAL
        assert SECRET not in (attempt.error or "")

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
        attempt = read_reply(reply.status, reply.headers, reply.body, now=0.0).attempt
        assert attempt.kind is AttemptKind.FAILED
        assert (attempt.error or "").startswith("HTTP 502: ")
        with pytest.raises(ValueError):
            decode_completion(reply.body)

    against(SimulatorConfig(faults=Faults(html_error=1.0)), scenario)


@pytest.mark.parametrize("chunked", [True, False])
def test_an_answer_larger_than_the_reply_cap_is_a_transport_error_not_a_memory_blowup(
        chunked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # a broken gateway streaming hundreds of MB per answer took 3 GB at 6 connections
    import pipeline.call.client as client

    monkeypatch.setattr(client, "MAX_REPLY_BYTES", 1 << 20)
    blob = b'{"x": "' + b"A" * (3 << 20) + b'"}'

    async def huge(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=blob, content_type="application/json")
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(blob), 1 << 16):
            await response.write(blob[start:start + (1 << 16)])
        await response.write_eof()
        return response

    async def go() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", huge)
        async with serve_app(app) as root:
            url = f"{root}/v1/chat/completions"
            async with AiohttpTransport(url=url, headers=request_headers("openai", SECRET), connections=1) as t:
                with pytest.raises(TransportError, match=r"answer too large \(.*more than 1 MB\): not read"):
                    await t.post(request_body(), timeout=10.0)

    asyncio.run(go())


def test_a_redirect_is_not_followed_so_a_key_in_the_body_stays_with_the_endpoint() -> None:
    # aiohttp follows a 307 with the same body: ModelsLab's key travels in the body
    seen: list[bytes] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({})

    async def go() -> None:
        other = web.Application()
        other.router.add_post("/v1/chat/completions", elsewhere)
        async with serve_app(other) as other_root:
            async def moved(request: web.Request) -> web.Response:
                raise web.HTTPTemporaryRedirect(f"{other_root}/v1/chat/completions")

            app = web.Application()
            app.router.add_post("/v1/chat/completions", moved)
            async with serve_app(app) as root:
                url = f"{root}/v1/chat/completions"
                async with AiohttpTransport(url=url, headers=request_headers("openai", SECRET), connections=1) as t:
                    reply = await t.post(request_body(), timeout=5.0)
        assert reply.status == 307
        assert read_reply(reply.status, reply.headers, reply.body, now=0.0).attempt.kind is AttemptKind.FATAL

    asyncio.run(go())
    assert seen == []


def test_an_endless_answer_is_cut_at_the_reply_cap_as_a_too_large_transport_error() -> None:
    # a gateway streaming a never-ending 200 body: each connection held up to 32 MB (1.6 GB at 50)
    async def scenario(sim: Simulator, transport: AiohttpTransport) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TransportError, match=r"^answer too large \(more than 4 MB\): not read$") as info:
            await transport.post(request_body(), timeout=30.0)
        assert loop.time() - started < 10.0  # cut at the cap, not at the timeout or the server's end
        assert not info.value.timeout
        assert_secret_absent(info.value)

    against(SimulatorConfig(api_key=SECRET, faults=Faults(endless_body=1.0, hang_seconds=30.0)), scenario)


def test_answers_read_at_once_hold_no_more_than_the_budget_shared_by_the_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.call.client as client

    monkeypatch.setattr(client, "MAX_BUFFERED_BYTES", 3 << 20)
    peak = 0
    take = client._BUDGET.take

    def watched(n: int) -> bool:
        nonlocal peak
        taken = take(n)
        peak = max(peak, client._BUDGET.used)
        return taken

    monkeypatch.setattr(client._BUDGET, "take", watched)

    async def scenario(sim: Simulator, transport: AiohttpTransport) -> None:
        results = await asyncio.gather(*[transport.post(request_body(), timeout=30.0) for _ in range(4)],
                                       return_exceptions=True)
        messages = sorted(str(r) for r in results)
        assert all(isinstance(r, TransportError) for r in results), messages
        assert any("while the answers being read hold 3 MB beyond that" in m for m in messages), messages
        assert 0 < peak <= 3 << 20
        assert client._BUDGET.used == 0  # every answer gave its share back

    against(SimulatorConfig(api_key=SECRET, faults=Faults(endless_body=1.0, hang_seconds=30.0)), scenario)


def test_an_endless_answer_fails_its_row_unbilled_and_the_run_finishes(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "hello"}, {"id": "b", "text": "BUY NOW"}])
    config = make_config(tmp_path, [rows], policies=["spam"], max_attempts=2)
    result = run_pipeline(config, SimulatorConfig(faults=Faults(endless_body=1.0, hang_seconds=30.0)))
    labels = result.labels()
    assert result.code == 1
    assert labels["status"].to_list() == ["failed", "failed"]
    assert all(e.startswith("answer too large (more than 4 MB)") for e in labels["error"].to_list())
    assert result.report()["requests"] == 0 and result.report()["cost_usd"] == 0
