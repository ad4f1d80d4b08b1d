"""An OpenAI-compatible chat-completions server with a keyword rule instead of a model.

>>> async def demo():
...     async with start_simulator(SimulatorConfig(profile="modelslab", api_key="k")) as sim:
...         print(sim.chat_url)   # http://127.0.0.1:PORT/api/v7/llm/chat/completions
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import time

import orjson
from aiohttp import web

from pipeline.simulator.config import SimulatorConfig, SimulatorStats
from pipeline.simulator.echo import echo_models, echo_reply
from pipeline.simulator.engine import AccountQueue, Engine
from pipeline.simulator.host import Host, Ticket
from pipeline.simulator.hosts import Reply
from pipeline.simulator.hosts.base import JSON
from pipeline.simulator.hosts.modelslab import FETCH_PATH, processing, status_error
from pipeline.simulator.hosts.vllm import metrics


class Simulator:
    """The server and its live state. Use ``start_simulator`` or ``async with Simulator(...)``."""

    def __init__(self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.config = config or SimulatorConfig()
        self.config.validate()
        self.stats = SimulatorStats()
        self.host = host
        self.port = port
        self.last_request_at = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._core = Host(self.config, self.stats)
        self._in_flight = 0
        self._jitter_rng = random.Random(self.config.seed + 1)
        self._engine = Engine(self.config.max_num_seqs)
        self._queue = AccountQueue()
        self._pending: dict[int, tuple[float, Reply]] = {}  # ModelsLab: id → (ready at, finished reply)

    @property
    def root(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``/chat/completions`` and ``/models`` below it)."""
        return self.root + self._core.shape.paths[0].removesuffix("/chat/completions")

    @property
    def chat_url(self) -> str:
        """Where this profile takes chat completions."""
        return self.root + self._core.shape.paths[0]

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        for path in self._core.shape.paths:
            app.router.add_post(path, self._chat)
        if self.config.profile == "modelslab":
            app.router.add_route("*", FETCH_PATH, self._fetch)
        if self.config.profile == "vllm":
            app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_simulator/stats", self._stats)
        app.router.add_post("/_simulator/reset", self._reset)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        self._runner = runner
        self.last_request_at = time.monotonic()

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def reset_stats(self) -> None:
        """Zero every counter in place and forget the prefix cache."""
        for f in dataclasses.fields(self.stats):
            value = getattr(self.stats, f.name)
            setattr(self.stats, f.name, {} if isinstance(value, dict) else 0)
        self._core.forget()
        self._engine.peak_waiting = self._engine.waiting

    # -- admin routes ---------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model", "owned_by": "simulator"} for name in self.config.served()]
        listing = {"object": "list", "data": data}
        if self.config.echo_key and self.config.api_key:
            return web.Response(body=echo_models(listing, self.config.api_key), content_type=JSON)
        return web.Response(body=orjson.dumps(listing), content_type=JSON)

    async def _stats(self, request: web.Request) -> web.Response:
        body = orjson.dumps(dataclasses.asdict(self.stats), option=orjson.OPT_NON_STR_KEYS)
        return web.Response(body=body, content_type=JSON)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return await self._stats(request)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.stats.metrics_scrapes += 1
        text = metrics(self.config.models[0], self._engine.running, self._engine.waiting, self.config.max_num_seqs)
        return web.Response(body=text, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _fetch(self, request: web.Request) -> web.StreamResponse:
        """ModelsLab's fetch: the finished answer once ``eta`` has passed, else still processing."""
        self.stats.fetches += 1
        key = self.config.api_key
        if key is not None and request.method == "POST":
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict) or body.get("key") != key:
                return self._send(self._core.shape.bad_key())
        try:
            request_id = int(request.match_info["id"])
        except ValueError:
            request_id = -1
        pending = self._pending.get(request_id)
        if pending is None:
            return self._send(status_error(f"Request id {request.match_info['id']} not found"))
        ready_at, reply = pending
        if time.monotonic() < ready_at:
            return self._send(processing(request_id, round(ready_at - time.monotonic(), 3), str(request.url)))
        return self._send(reply)

    # -- chat completions -----------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        self.last_request_at = time.monotonic()
        self._in_flight += 1
        if self._in_flight > self.stats.max_in_flight:
            self.stats.max_in_flight = self._in_flight
        try:
            return await self._handle(request)
        finally:
            self._in_flight -= 1

    def _send(self, reply: Reply) -> web.Response:
        self._core.count_status(reply.status)
        if self.config.echo_key and self.config.api_key:
            reply = echo_reply(reply, self.config.api_key)
        headers = {**self._core.limit_headers(), **(reply.headers or {})} or None
        return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type, headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        ticket = self._core.admit(await request.read(), request.headers.get("Authorization"))
        if isinstance(ticket, Reply):
            return self._send(ticket)
        if cfg.in_flight_budget is not None and self._in_flight > cfg.in_flight_budget:
            self.stats.budget_refusals += 1
            return self._send(self._core.shape.no_credit(retry_after=1.0))
        if cfg.profile == "vllm":
            async with self._engine.slot():
                self.stats.max_waiting = max(self.stats.max_waiting, self._engine.peak_waiting)
                await self._think()
                return await self._answer(request, ticket)
        if cfg.profile == "modelslab":
            if not self._queue.enter(cfg.queue):
                self.stats.queue_rejections += 1
                return self._send(self._core.shape.full(cfg.queue, cfg.queue_retry_after))
            try:
                await self._think()
                return await self._answer(request, ticket)
            finally:
                self._queue.leave()
        await self._think()
        return await self._answer(request, ticket)

    async def _think(self) -> None:
        cfg = self.config
        if cfg.latency_ms or cfg.jitter_ms:
            jitter = self._jitter_rng.uniform(-cfg.jitter_ms, cfg.jitter_ms) if cfg.jitter_ms else 0.0
            await asyncio.sleep(max(0.0, cfg.latency_ms + jitter) / 1000.0)

    async def _answer(self, request: web.Request, ticket: Ticket) -> web.StreamResponse:
        cfg, host = self.config, self._core
        fault = host.draw_fault()
        if fault == "hang":
            await asyncio.sleep(cfg.faults.hang_seconds)
            fault = None
        if cfg.profile == "modelslab" and fault is None and host.draw(cfg.processing):
            request_id = host.next_id()
            self._pending[request_id] = (time.monotonic() + cfg.processing_eta, host.reply(ticket, None))
            self.stats.processing_replies += 1
            fetch_url = self.root + FETCH_PATH.format(id=request_id)
            return self._send(processing(request_id, cfg.processing_eta, fetch_url))
        reply = host.reply(ticket, fault)
        if reply.action == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        if reply.action == "truncate":
            return await self._truncated(request, reply.body)
        if reply.action == "endless":
            return await self._endless(request)
        return self._send(reply)

    async def _truncated(self, request: web.Request, payload: bytes) -> web.StreamResponse:
        """200 announcing the full length, half the body, then the connection closes."""
        self._core.count_status(200)
        response = web.StreamResponse(status=200)
        response.content_type = JSON
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        if request.transport is not None:
            request.transport.close()
        return response


    async def _endless(self, request: web.Request) -> web.StreamResponse:
        """200, chunked: the start of a chat completion, then text as fast as the client reads, until the
        client lets go or ``hang_seconds`` have passed (then the connection closes)."""
        self._core.count_status(200)
        response = web.StreamResponse(status=200)
        response.content_type = JSON
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async with asyncio.timeout(self.config.faults.hang_seconds):
                await response.write(b'{"object": "chat.completion", "choices": [{"message": {"content": "')
                while True:
                    await response.write(_ENDLESS_CHUNK)
        except (TimeoutError, ConnectionError):
            pass
        if request.transport is not None:
            request.transport.close()
        return response


#: what an endless body repeats (64 KB).
_ENDLESS_CHUNK = b"endless " * 8192


def start_simulator(config: SimulatorConfig | None = None, *, host: str = "127.0.0.1",
                    port: int = 0) -> Simulator:
    """A simulator to use as ``async with start_simulator(cfg) as sim:`` (free port by default)."""
    return Simulator(config, host=host, port=port)
