"""Backpressure from a vLLM server's own queue: vLLM never answers 429, it queues.

vLLM serves Prometheus metrics at ``<server root>/metrics``: ``vllm:num_requests_running`` (in the
GPU batch) and ``vllm:num_requests_waiting`` (queued behind it). Sending more than the batch holds
only lengthens that queue (and every request's latency, towards the timeout). The pure
`BackpressureController` turns samples of the waiting gauge into a number of requests to keep in flight
(additive increase while the queue stays at or under a small target, multiplicative decrease when it
grows past it); `VllmBackpressure` scrapes the metrics on a timer and hands out slots.

Use::

    async with VllmBackpressure(metrics_url(base_url), max_limit=config.concurrency) as gate:
        await gate.wait_for_slot()
        try:
            ...  # one request
        finally:
            gate.release()

A server without vLLM metrics (404, other names) leaves the gate open at ``max_limit``; a scrape
that fails later keeps the last limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp

from pipeline.config.providers import USER_AGENT, server_root

log = logging.getLogger("moderate.vllm")

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"


def metrics_url(base_url: str) -> str:
    """Where a vLLM server behind ``base_url`` serves its metrics.

    >>> metrics_url("http://127.0.0.1:8000/v1")
    'http://127.0.0.1:8000/metrics'
    """
    return server_root(base_url) + "/metrics"


def parse_metrics(text: str, names: Iterable[str] = (WAITING, RUNNING)) -> dict[str, float]:
    """The sum over every labelled sample of each named metric in Prometheus text format.

    Names absent from the text are absent from the result. vLLM labels samples by model and engine;
    a server with several engines reports one sample per engine, so they are added up.

    >>> parse_metrics('# TYPE vllm:num_requests_waiting gauge\\nvllm:num_requests_waiting{model_name="m"} 3.0')
    {'vllm:num_requests_waiting': 3.0}
    """
    wanted = set(names)
    totals: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, rest = _split_name(line)
        if name not in wanted:
            continue
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value):
            totals[name] = totals.get(name, 0.0) + value
    return totals


def _split_name(line: str) -> tuple[str, str]:
    """The metric name and what follows its label set (label values may hold spaces, braces, quotes)."""
    end = 0
    while end < len(line) and line[end] not in "{ \t":
        end += 1
    name, i = line[:end], end
    if i < len(line) and line[i] == "{":
        quoted = escaped = False
        i += 1
        while i < len(line):
            c = line[i]
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = not quoted
            elif c == "}" and not quoted:
                break
            i += 1
        i += 1
    return name, line[i:]


@dataclass(slots=True)
class BackpressureController:
    """Requests to keep in flight so that vLLM's waiting queue stays near ``target_waiting``.

    Pure: it is told the time. It starts at ``initial`` requests and, until the queue first grows past
    the target, grows by half a sample (slow start, so a large server is filled within seconds);
    after that additively (``step`` per sample). It grows only while our own requests fill the
    limit, so an idle client does not grow a limit it never tested; a decrease at most once
    per ``cooldown`` seconds (the time the queue needs to show the effect of the last cut) that takes
    back the queue's excess over the target from our requests in flight, and never more than a
    ``factor`` cut at once.
    """

    max_limit: int
    min_limit: int = 1
    target_waiting: float = 4.0
    step: float = 1.0
    factor: float = 0.7
    cooldown: float = 2.0
    initial: int = 8
    #: current limit as a real number (the integer part is handed out).
    level: float = 0.0
    last_decrease: float = -math.inf

    def __post_init__(self) -> None:
        if self.max_limit < 1 or not 1 <= self.min_limit <= self.max_limit:
            raise ValueError("need 1 <= min_limit <= max_limit")
        self.level = self.level or float(min(self.max_limit, max(self.min_limit, self.initial)))

    @property
    def limit(self) -> int:
        return max(self.min_limit, min(self.max_limit, int(self.level)))

    def observe(self, *, waiting: float, in_flight: int, now: float) -> int:
        """Take one sample of the server's waiting queue and our requests in flight; return the new limit."""
        if waiting > self.target_waiting:
            if now - self.last_decrease >= self.cooldown:
                # take back the excess over the target, but at most a `factor` cut at once
                excess = waiting - self.target_waiting
                self.level = min(max(self.level * self.factor, in_flight - excess, self.min_limit), self.level)
                self.last_decrease = now
        elif in_flight >= self.limit:
            slow_start = self.last_decrease == -math.inf
            grow = max(self.step, 0.5 * self.level) if slow_start else self.step
            self.level = min(self.level + grow, float(self.max_limit))
        return self.limit


class VllmBackpressure:
    """Scrapes vLLM's metrics every ``interval`` seconds and gates requests by the controller's limit."""

    def __init__(self, url: str, *, max_limit: int, controller: BackpressureController | None = None,
                 interval: float = 0.5, timeout: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.controller = controller or BackpressureController(max_limit=max_limit)
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        #: False until a scrape has found vLLM's gauges (the gate is then open at max_limit).
        self.active = False
        self.scrapes = 0
        self.scrape_errors = 0
        self.last: dict[str, float] = {}
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def limit(self) -> int:
        return self.controller.limit if self.active else self.controller.max_limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __aenter__(self) -> VllmBackpressure:
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT},
                                              timeout=aiohttp.ClientTimeout(total=self.timeout))
        if await self.poll_once():
            self._task = asyncio.create_task(self._poll_forever(), name="vllm-metrics")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def wait_for_slot(self) -> None:
        """Wait until fewer than `limit` requests are in flight, then count one more."""
        while self._in_flight >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._in_flight += 1

    def release(self) -> None:
        """One request is done (answered or not)."""
        self._in_flight -= 1
        self._wake()

    async def poll_once(self) -> bool:
        """Scrape the metrics once and update the limit; False when no vLLM gauges could be read."""
        assert self._session is not None, "use 'async with VllmBackpressure(...)'"
        self.scrapes += 1
        try:
            async with self._session.get(self.url) as response:
                text = await response.text() if response.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
            self.scrape_errors += 1
            log.debug("metrics scrape failed: %s", exc)
            return False
        gauges = parse_metrics(text)
        if WAITING not in gauges:
            self.scrape_errors += 1
            return False
        self.active = True
        self.last = gauges
        self.controller.observe(waiting=gauges[WAITING], in_flight=self._in_flight, now=self.clock())
        self._wake()
        return True

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll_once()

    def _wake(self) -> None:
        free = self.limit - self._in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
