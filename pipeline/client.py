"""The HTTP edge: one small transport interface, an aiohttp implementation, response decoding.

Tests swap the transport for the in-process simulator or for a plain async function.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import orjson

from pipeline.records import Usage
from pipeline.redact import redact_body, redact_headers

log = logging.getLogger("moderate.http")


class TransportError(Exception):
    """The request got no HTTP answer: connection refused/reset, timeout, broken body."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        #: no connection could be made at all (refused, unknown host): maybe a wrong URL
        self.unreachable = unreachable


class BadResponse(Exception):
    """An HTTP 200 whose body is not a chat completion (HTML, truncated JSON, no choices)."""


@dataclass(slots=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Sends one JSON body to the chat-completions endpoint."""

    async def post(self, body: bytes, *, timeout: float) -> HttpReply: ...


@dataclass(slots=True)
class Completion:
    content: str | None
    reasoning: str | None
    finish_reason: str | None
    usage: Usage | None
    model: str | None


class AiohttpTransport:
    """A pooled aiohttp session with as many connections as workers."""

    def __init__(self, *, url: str, headers: Mapping[str, str], connections: int) -> None:
        self.url = url
        self._headers = dict(headers)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def __aenter__(self) -> AiohttpTransport:
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections,
                                         ttl_dns_cache=300, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=self._headers, skip_auto_headers=("User-Agent",),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, body: bytes, *, timeout: float) -> HttpReply:
        assert self._session is not None, "use 'async with AiohttpTransport(...)'"
        # aiohttp's own timer (one per request, cheaper than wrapping in asyncio.timeout)
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            client_timeout = self._timeouts[timeout] = aiohttp.ClientTimeout(total=timeout)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("POST %s headers=%s body=%s", self.url, redact_headers(self._headers), redact_body(body))
        try:
            async with self._session.post(self.url, data=body, timeout=client_timeout) as response:
                payload = await response.read()
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("HTTP %s %s", response.status, self._without_key(payload)[:300])
                return HttpReply(response.status, response.headers, payload)
        except TimeoutError:
            raise TransportError(f"no answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise TransportError(_describe(exc),
                                 unreachable=isinstance(exc, aiohttp.ClientConnectorError)) from None


    def _without_key(self, payload: bytes) -> bytes:
        """A body for the debug log: hosts sometimes quote the key they were sent."""
        auth = self._headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ").encode()
        return payload.replace(key, b"[redacted]") if key else payload


class FunctionTransport:
    """A transport that calls an async function: the seam for tests without a network."""

    def __init__(self, handler: Callable[[bytes], Awaitable[HttpReply]]) -> None:
        self._handler = handler

    async def post(self, body: bytes, *, timeout: float) -> HttpReply:
        try:
            async with asyncio.timeout(timeout):
                return await self._handler(body)
        except TimeoutError:
            raise TransportError(f"no answer within {timeout:g} s") from None


def decode_completion(body: bytes) -> Completion:
    """Read the parts we use from a chat-completion body; raise BadResponse for anything else."""
    try:
        data = orjson.loads(body)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        if not isinstance(message, dict):
            raise TypeError("message is not an object")
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise BadResponse(f"not a chat completion: {_snippet(body)}") from None
    reasoning = message.get("reasoning")
    if reasoning is None:
        reasoning = message.get("reasoning_content")
    return Completion(
        content=message.get("content"),
        reasoning=reasoning if isinstance(reasoning, str) else None,
        finish_reason=choice.get("finish_reason"),
        usage=_usage(data.get("usage")),
        model=data.get("model"),
    )


def error_message(reply: HttpReply) -> str:
    """A one-line description of a non-200 answer (OpenAI error JSON, HTML or plain text)."""
    try:
        detail = orjson.loads(reply.body)["error"]
        detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        text = str(detail)
    except Exception:
        text = _snippet(reply.body)
    return f"HTTP {reply.status}: {' '.join(text.split())[:200]}"


def _usage(raw: object) -> Usage | None:
    """The usage block; None when missing or malformed (the caller then estimates the tokens)."""
    if not isinstance(raw, dict):
        return None
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    cost = raw.get("cost")
    try:
        return Usage(
            prompt_tokens=int(raw.get("prompt_tokens") or 0),
            cached_prompt_tokens=int(prompt_details.get("cached_tokens") or 0),
            completion_tokens=int(raw.get("completion_tokens") or 0),
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
            server_cost_usd=float(cost) if isinstance(cost, int | float) else None,
        )
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None


def _snippet(body: bytes) -> str:
    text = body[:120].decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text) if text else "empty body"


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response body cut short"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    return f"{type(exc).__name__}: {exc}".split("\n")[0][:200]
