"""An OpenAI-compatible chat-completions server with a keyword rule instead of a model.

>>> async def demo():
...     async with start_simulator(SimulatorConfig()) as sim:
...         print(sim.base_url)   # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import time
from typing import Any

import orjson
from aiohttp import web

from pipeline.simulator import rules
from pipeline.simulator.config import ALL_FAULTS, SimulatorConfig, SimulatorStats
from pipeline.simulator.limits import RateLimits, retry_after_headers
from pipeline.simulator.protocol import EFFORTS, HTML_502, authorised, effort, error, split_messages

_JSON = "application/json"
_PROFILE_CACHE = 256  # distinct system messages remembered (prefix cache, parsed topic)


@dataclasses.dataclass(slots=True)
class _Profile:
    """What the simulator derives once per distinct system message."""

    fmt: str
    keywords: tuple[tuple[str, str], ...]
    tokens: int
    warm: bool = False  # seen in an answered request: its prefix is cached now


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
        self._profiles: dict[str, _Profile] = {}
        self._limits = RateLimits()
        self._in_flight = 0
        self._next_id = 0
        self._fault_rng = random.Random(self.config.seed)
        self._jitter_rng = random.Random(self.config.seed + 1)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
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
        self._profiles.clear()

    # -- admin routes ---------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model", "owned_by": "simulator"} for name in self.config.models]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=_JSON)

    async def _stats(self, request: web.Request) -> web.Response:
        body = orjson.dumps(dataclasses.asdict(self.stats), option=orjson.OPT_NON_STR_KEYS)
        return web.Response(body=body, content_type=_JSON)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return await self._stats(request)

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

    def _send(
        self, status: int, body: bytes, content_type: str = _JSON, headers: dict[str, str] | None = None
    ) -> web.Response:
        counts = self.stats.status_counts
        counts[status] = counts.get(status, 0) + 1
        cfg = self.config
        if cfg.advertise_limits and (cfg.rpm is not None or cfg.tpm is not None):
            headers = {**self._limits.headers(cfg.rpm, cfg.tpm), **(headers or {})}
        return web.Response(status=status, body=body, content_type=content_type, headers=headers)

    def _count_fault(self, kind: str) -> None:
        self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._send(*error(400, "invalid_request_error", "request body is not valid JSON"))
        if not isinstance(body, dict):
            return self._send(*error(400, "invalid_request_error", "request body must be a JSON object"))
        if cfg.api_key is not None and not authorised(request.headers.get("Authorization"), body, cfg.api_key):
            return self._send(*error(401, "invalid_request_error", "invalid API key", "invalid_api_key"))
        model = body.get("model") or body.get("model_id")
        if model not in cfg.models:
            message = f"the model {model!r} does not exist; served: {', '.join(cfg.models)}"
            return self._send(*error(404, "invalid_request_error", message, "model_not_found"))
        if cfg.out_of_credit:
            return self._send(*error(402, "insufficient_quota", "out of credit", "insufficient_credits"))
        split = split_messages(body.get("messages"))
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if split is None or not (max_tokens is None or (type(max_tokens) is int and max_tokens > 0)):
            return self._send(*error(400, "invalid_request_error", "messages or max_tokens malformed"))
        if effort(body) not in EFFORTS:
            return self._send(*error(400, "invalid_request_error", "reasoning effort must be low|medium|high"))
        system, user = split
        profile = self._profile(system)
        decision = rules.decide(profile.keywords, user)
        answer = rules.render_answer(profile.fmt, decision)
        reasoning = rules.render_reasoning(decision)
        reasoning_tokens = rules.count_tokens(reasoning)
        completion = rules.count_tokens(answer) + reasoning_tokens
        prompt = rules.prompt_tokens(profile.tokens, user)

        wait = self._limits.take(cfg.rpm, cfg.tpm, prompt + completion)
        if wait > 0:
            self.stats.rate_limited += 1
            status, problem = error(429, "rate_limit_exceeded", "rate limit reached", "rate_limit_exceeded")
            return self._send(status, problem, headers=retry_after_headers(cfg.retry_after, wait))
        if "[[reject]]" in user:
            return self._send(*error(400, "invalid_request_error", "content rejected", "content_rejected"))
        if cfg.latency_ms or cfg.jitter_ms:
            jitter = self._jitter_rng.uniform(-cfg.jitter_ms, cfg.jitter_ms) if cfg.jitter_ms else 0.0
            await asyncio.sleep(max(0.0, cfg.latency_ms + jitter) / 1000.0)

        fault = self._draw_fault()
        if fault is not None:
            self._count_fault(fault)
            if fault == "hang":
                await asyncio.sleep(cfg.faults.hang_seconds)
                fault = None
            elif fault == "error_5xx":
                status = self._fault_rng.choice((500, 502, 503, 504))
                return self._send(*error(status, "server_error", "the upstream model server failed"))
            elif fault == "html_error":
                return self._send(502, HTML_502, "text/html")
            elif fault == "non_json":
                return self._send(200, b"upstream busy, please try again later", "text/plain")
            elif fault == "reset":
                if request.transport is not None:
                    request.transport.abort()
                return web.Response()  # never sent: the connection is gone

        finish = "stop"
        if fault == "junk_output":
            answer = rules.JUNK_OUTPUT
            completion = rules.count_tokens(answer) + reasoning_tokens
        elif fault == "refusal":
            answer = rules.REFUSAL
            completion = rules.count_tokens(answer) + reasoning_tokens
        if fault == "length_empty" or (max_tokens is not None and completion > max_tokens):
            answer, finish = "", "length"
            completion = reasoning_tokens = max_tokens or 4096
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        if body.get("include_reasoning") is not False:
            message[cfg.reasoning_field] = reasoning
        self._next_id += 1
        response: dict[str, Any] = {
            "id": f"chatcmpl-sim-{self._next_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        if fault == "truncated_body":
            return await self._truncated(request, orjson.dumps(response))
        cached = rules.cached_tokens(profile.tokens) if profile.warm else 0
        profile.warm = True
        stats = self.stats
        stats.billed += 1
        stats.prompt_tokens += prompt
        stats.completion_tokens += completion
        stats.cached_tokens += cached
        stats.reasoning_tokens += reasoning_tokens
        if cfg.include_usage:
            response["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
            }
        return self._send(200, orjson.dumps(response))

    async def _truncated(self, request: web.Request, payload: bytes) -> web.StreamResponse:
        """200 announcing the full length, half the body, then the connection closes."""
        counts = self.stats.status_counts
        counts[200] = counts.get(200, 0) + 1
        response = web.StreamResponse(status=200)
        response.content_type = _JSON
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        if request.transport is not None:
            request.transport.close()
        return response

    def _profile(self, system: str) -> _Profile:
        profile = self._profiles.get(system)
        if profile is None:
            if len(self._profiles) >= _PROFILE_CACHE:
                del self._profiles[next(iter(self._profiles))]
            profile = _Profile(rules.output_format(system), rules.keywords_for(system),
                               rules.message_tokens(system))
            self._profiles[system] = profile
        return profile

    def _draw_fault(self) -> str | None:
        faults = self.config.faults
        r = self._fault_rng.random()
        for kind in ALL_FAULTS:
            p = getattr(faults, kind)
            if p:
                if r < p:
                    return kind
                r -= p
        return None


def start_simulator(config: SimulatorConfig | None = None, *, host: str = "127.0.0.1",
                    port: int = 0) -> Simulator:
    """A simulator to use as ``async with start_simulator(cfg) as sim:`` (free port by default)."""
    return Simulator(config, host=host, port=port)
