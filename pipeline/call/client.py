"""The HTTP edge: one small transport interface and its aiohttp implementation.

Tests swap the transport for the in-process simulator or for a plain async function.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from pipeline.call.redact import Redactor, redact_body, redact_headers

log = logging.getLogger("moderate.http")

#: the largest answer read: a chat completion is a few KB, and under 1 MB at the biggest output cap
#: with reasoning kept; a reply past this is a broken gateway: a failed attempt, never billed.
MAX_REPLY_BYTES = 4 << 20
#: what one answer may hold without drawing on the budget below (every usual answer fits).
REPLY_ALLOWANCE = 256 << 10
#: what the answers being read at once may hold beyond their allowance, in the whole process. Without
#: it, a gateway sending endless bodies would hold connections × MAX_REPLY_BYTES (1.6 GB at 50 with 32 MB).
MAX_BUFFERED_BYTES = 64 << 20


class TransportError(Exception):
    """The request got no HTTP answer: connection refused/reset, timeout, broken body."""

    def __init__(self, message: str, *, unreachable: bool = False, timeout: bool = False) -> None:
        super().__init__(message)
        #: no connection could be made at all (refused, unknown host): maybe a wrong URL
        self.unreachable = unreachable
        #: no answer within the request timeout
        self.timeout = timeout


@dataclass(slots=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Sends one JSON body to the chat-completions endpoint."""

    async def post(self, body: bytes, *, timeout: float, url: str | None = None) -> HttpReply:
        """POST ``body`` to the endpoint (or to ``url``, where a host said to fetch an answer)."""
        ...


class AiohttpTransport:
    """A pooled aiohttp session with as many connections as workers."""

    def __init__(self, *, url: str, headers: Mapping[str, str], connections: int) -> None:
        self.url = url
        self._headers = dict(headers)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        auth = self._headers.get("Authorization", "")
        self._redactor = Redactor(auth.removeprefix("Bearer ") or None)
        self._origin = _origin(url)

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

    async def post(self, body: bytes, *, timeout: float, url: str | None = None) -> HttpReply:
        assert self._session is not None, "use 'async with AiohttpTransport(...)'"
        # aiohttp's own timer (one per request, cheaper than wrapping in asyncio.timeout)
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            client_timeout = self._timeouts[timeout] = aiohttp.ClientTimeout(total=timeout)
        if url is not None and _origin(url) != self._origin:
            # the key travels in the headers (and in ModelsLab's body): it never goes to a host the
            # endpoint merely named in an answer
            raise TransportError(f"the host asked to fetch the answer from another host ({_origin(url)}); "
                                 "not sent, so the key stays with the endpoint")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("POST %s headers=%s body=%s", self._redactor.text(url or self.url), redact_headers(self._headers),
                      redact_body(body))
        try:
            # never follow a redirect: it would carry the body (ModelsLab: with the key) to the new place
            async with self._session.post(url or self.url, data=body, timeout=client_timeout,
                                          allow_redirects=False) as response:
                payload = await _read_capped(response, MAX_REPLY_BYTES)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("HTTP %s %s", response.status, self._redactor.log_line(payload, 300))
                return HttpReply(response.status, response.headers, payload)
        except TimeoutError:
            raise TransportError(f"no answer within {timeout:g} s", timeout=True) from None
        except aiohttp.ClientError as exc:
            raise TransportError(_describe(exc),
                                 unreachable=isinstance(exc, aiohttp.ClientConnectorError)) from None


class FunctionTransport:
    """A transport that calls an async function: the seam for tests without a network."""

    def __init__(self, handler: Callable[[bytes], Awaitable[HttpReply]]) -> None:
        self._handler = handler

    async def post(self, body: bytes, *, timeout: float, url: str | None = None) -> HttpReply:
        try:
            async with asyncio.timeout(timeout):
                return await self._handler(body)
        except TimeoutError:
            raise TransportError(f"no answer within {timeout:g} s", timeout=True) from None


class _Budget:
    """Bytes held by answers being read, beyond each one's allowance, in the whole process."""

    def __init__(self) -> None:
        self.used = 0
        self._lock = threading.Lock()  # transports may run on event loops in several threads

    def take(self, n: int) -> bool:
        """Take ``n`` bytes if they fit under MAX_BUFFERED_BYTES."""
        with self._lock:
            if self.used + n > MAX_BUFFERED_BYTES:
                return False
            self.used += n
            return True

    def give_back(self, n: int) -> None:
        with self._lock:
            self.used -= n


_BUDGET = _Budget()


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or a TransportError (read no further) once it passes ``limit`` bytes, or once it
    passes REPLY_ALLOWANCE while the answers being read hold MAX_BUFFERED_BYTES beyond theirs."""
    length = response.content_length
    plain = response.headers.get("Content-Encoding", "identity").lower() == "identity"
    if plain and length is not None and length <= REPLY_ALLOWANCE:  # the common case: a small announced length
        return await response.read()
    drawn = 0  # taken from the budget
    try:
        if plain and length is not None and length > limit:
            raise TransportError(f"answer too large ({length:,} bytes announced, more than {_megabytes(limit)}): "
                                 "not read")
        body = bytearray()
        async for chunk in response.content.iter_chunked(1 << 16):
            size = len(body) + len(chunk)
            if size > limit:
                raise TransportError(f"answer too large (more than {_megabytes(limit)}): not read")
            if (need := size - REPLY_ALLOWANCE - drawn) > 0:
                if not _BUDGET.take(need):
                    raise TransportError(
                        f"answer too large (more than {REPLY_ALLOWANCE >> 10} KB while the answers being read "
                        f"hold {_megabytes(MAX_BUFFERED_BYTES)} beyond that): not read")
                drawn += need
            body += chunk
        return bytes(body)
    except TransportError:
        response.close()
        raise
    finally:
        _BUDGET.give_back(drawn)


def _megabytes(n: int) -> str:
    return f"{n / (1 << 20):g} MB"


def _origin(url: str) -> str:
    """scheme://host:port of a URL (its path, query and any credentials left out)."""
    try:
        parsed = URL(url)
        return f"{parsed.scheme}://{parsed.host}:{parsed.port}"
    except (ValueError, TypeError):
        return "?"


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response body cut short"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    return f"{type(exc).__name__}: {exc}".split("\n")[0][:200]
