"""One verdict for one (text, policy): the request, its retries and what it cost.

Retries: transport errors, 408/409/425/429/5xx and unreadable bodies are retried with full-jitter
exponential backoff (Retry-After wins when the server sends it, and pauses every worker through
the shared throttle). Billed answers that are not a verdict are retried a bounded number of
times; an answer cut off by the output cap is retried with a larger cap. A 4xx about the row
fails only that row; 401/402/403/404 stop the whole run.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import orjson

from pipeline.client import BadResponse, HttpReply, Transport, TransportError, decode_completion, error_message
from pipeline.cost import Pricing
from pipeline.parser import InvalidOutput, parse_verdict
from pipeline.providers import build_body
from pipeline.records import Outcome, Status, Usage
from pipeline.retry import backoff_delay, classify_http_status, retry_after_seconds
from pipeline.throttle import Throttle
from pipeline.tokens import MESSAGE_OVERHEAD, count_tokens, quick_estimate

_PLACEHOLDER = "\u0000content\u0000"


#: connection failures, before any answer at all, that make the endpoint count as unreachable.
UNREACHABLE_BEFORE_FATAL = 3


class FatalEndpointError(Exception):
    """The endpoint refuses the whole run (bad key, no credit, wrong model or URL)."""

    def __init__(self, message: str, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        #: the row's outcome so far (what earlier attempts were billed still counts)
        self.outcome = outcome if outcome is not None else Outcome(Status.ABORTED)


@dataclass(slots=True)
class CallSettings:
    provider: str
    model: str
    reasoning_effort: str
    max_tokens: int
    max_tokens_cap: int
    request_timeout: float
    max_attempts: int
    invalid_output_retries: int
    keep_reasoning: bool
    api_key: str | None
    #: completion tokens reserved against the TPM budget before the real usage is known.
    expected_completion_tokens: int = 512


class Judge:
    """Sends requests through a transport and the shared throttle; never raises for one row."""

    def __init__(self, *, transport: Transport, throttle: Throttle, settings: CallSettings,
                 pricing: Pricing, rng: random.Random | None = None) -> None:
        self.transport = transport
        self.throttle = throttle
        self.settings = settings
        self.pricing = pricing
        self._rng = rng or random.Random()
        self._templates: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        #: set by the run when it stops (signal, budget, fatal error): retries end at once.
        self.stop_status: Status | None = None
        # an endpoint that never answered once and refuses connections is a wrong URL or a
        # server that is down: stop the run instead of retrying every row
        self._answered = False
        self._unreachable = 0

    def body(self, system: str, user: str, max_tokens: int) -> bytes:
        """The request body: a per-(policy, output cap) template with the content spliced in.

        JSON string encoding does not depend on context, so encoding the content alone and
        placing it between the template's two halves gives exactly `orjson.dumps(build_body(...))`.
        """
        template = self._templates.get((system, max_tokens))
        if template is None:
            s = self.settings
            whole = orjson.dumps(build_body(
                s.provider, model=s.model, system=system, user=_PLACEHOLDER, reasoning_effort=s.reasoning_effort,
                max_tokens=max_tokens, keep_reasoning=s.keep_reasoning, api_key=s.api_key,
            ))
            prefix, _, suffix = whole.partition(orjson.dumps(_PLACEHOLDER))
            template = self._templates[(system, max_tokens)] = (prefix, suffix)
        prefix, suffix = template
        return prefix + orjson.dumps(user) + suffix

    async def judge(self, *, system: str, system_tokens: int, user: str) -> Outcome:
        """Ask for a verdict until one arrives or the attempts run out. Raises only FatalEndpointError."""
        s = self.settings
        max_tokens = s.max_tokens
        body = self.body(system, user, max_tokens)
        reserve = system_tokens + quick_estimate(user) + 2 * MESSAGE_OVERHEAD + s.expected_completion_tokens
        outcome = Outcome(Status.FAILED)
        invalid_left = s.invalid_output_retries
        for attempt in range(1, s.max_attempts + 1):
            if self.stop_status is not None:  # the run is stopping: no new attempt
                return self._stopped(outcome)
            outcome.attempts = attempt
            await self.throttle.acquire(reserve)
            if self.stop_status is not None:
                return self._stopped(outcome)
            started = time.perf_counter()
            try:
                reply = await self.transport.post(body, timeout=s.request_timeout)
            except TransportError as exc:
                if exc.unreachable and not self._answered:
                    self._unreachable += 1
                    if self._unreachable >= UNREACHABLE_BEFORE_FATAL:
                        raise FatalEndpointError(f"{exc}: is the server running and the base URL right?",
                                                 outcome) from None
                self.throttle.settle(reserve, 0)
                self.throttle.on_failure(timeout="no answer within" in str(exc))
                outcome.status = Status.FAILED
                outcome.error = self._redact(str(exc))
                await self._backoff(attempt, None)
                continue
            outcome.latency_ms = (time.perf_counter() - started) * 1000.0
            self._answered = True
            self.throttle.on_headers(reply.headers)
            kind = classify_http_status(reply.status)
            if kind != "ok":
                self.throttle.settle(reserve, 0)
                outcome.error = error_message(self._redacted(reply))
                if kind == "fatal":
                    raise FatalEndpointError(outcome.error, outcome)
                if kind == "row":
                    self.throttle.on_success()
                    outcome.status = Status.REJECTED
                    return outcome
                outcome.status = Status.FAILED
                retry_after = retry_after_seconds(reply.headers, now=time.time())
                if reply.status in (429, 503):
                    self.throttle.on_throttle(retry_after, status=reply.status)
                else:
                    self.throttle.on_failure(timeout=False)
                await self._backoff(attempt, retry_after)
                continue
            try:
                completion = decode_completion(reply.body)
            except BadResponse:
                self.throttle.settle(reserve, 0)
                self.throttle.on_failure(timeout=False)
                outcome.status = Status.FAILED
                outcome.error = _bad_response_message(self._redacted(reply).body)
                await self._backoff(attempt, None)
                continue
            self.throttle.on_success()
            usage = completion.usage or self._estimate_usage(system_tokens, user, completion)
            self.throttle.settle(reserve, usage.prompt_tokens + usage.completion_tokens)
            if outcome.billed_calls:
                outcome.usage.add(usage)
            else:
                outcome.usage = usage
            outcome.billed_calls += 1
            outcome.cost_usd += self.pricing.cost(usage)
            outcome.finish_reason = completion.finish_reason
            outcome.served_model = completion.model
            if s.keep_reasoning:
                outcome.reasoning = completion.reasoning
            content = completion.content or ""
            try:
                outcome.verdict = parse_verdict(content)
            except InvalidOutput as exc:
                if completion.finish_reason == "length":
                    outcome.status = Status.TRUNCATED
                    outcome.error = f"output cap of {max_tokens} tokens reached before an answer"
                    outcome.raw_output = content or None
                    if max_tokens < s.max_tokens_cap:
                        max_tokens = min(s.max_tokens_cap, max_tokens * 2)
                        body = self.body(system, user, max_tokens)
                        continue
                    return outcome
                outcome.status = Status.INVALID_OUTPUT
                outcome.error = self._redact(str(exc))
                outcome.raw_output = content
                if invalid_left > 0:
                    invalid_left -= 1
                    continue
                return outcome
            outcome.status = Status.OK
            outcome.error = None
            outcome.raw_output = None
            return outcome
        if outcome.status is Status.FAILED:
            outcome.error = f"{outcome.error} (after {s.max_attempts} attempts)"
        return outcome

    def _stopped(self, outcome: Outcome) -> Outcome:
        """The run stopped before a usable answer: the row is unsent (what was billed still counts)."""
        assert self.stop_status is not None
        outcome.status = self.stop_status
        last = f" (last: {outcome.error})" if outcome.error else ""
        outcome.error = f"the run stopped before a usable answer{last}"
        outcome.verdict = None
        return outcome

    def _redacted(self, reply: HttpReply) -> HttpReply:
        """The reply with the key removed from its body, before any of it is quoted."""
        key = self.settings.api_key
        if key and key.encode() in reply.body:
            return HttpReply(reply.status, reply.headers, reply.body.replace(key.encode(), b"[redacted]"))
        return reply

    def _redact(self, text: str) -> str:
        """Servers sometimes echo what they were sent: never let the key through."""
        key = self.settings.api_key
        return text.replace(key, "[redacted]") if key and key in text else text

    async def _backoff(self, attempt: int, retry_after: float | None) -> None:
        if attempt >= self.settings.max_attempts:
            return
        delay = backoff_delay(attempt, rand=self._rng.random())
        if retry_after is not None:
            delay = max(delay, retry_after)
        await asyncio.sleep(delay)

    def _estimate_usage(self, system_tokens: int, user: str, completion: object) -> Usage:
        """The server sent no usage: count it ourselves and mark it as an estimate."""
        content = getattr(completion, "content", None) or ""
        reasoning = getattr(completion, "reasoning", None) or ""
        completion_tokens = count_tokens(content) + count_tokens(reasoning)
        return Usage(
            prompt_tokens=system_tokens + count_tokens(user) + 2 * MESSAGE_OVERHEAD,
            completion_tokens=completion_tokens,
            reasoning_tokens=count_tokens(reasoning),
            estimated=True,
        )



def _bad_response_message(body: bytes) -> str:
    try:
        decode_completion(body)
    except BadResponse as exc:
        return str(exc)
    return "not a chat completion"
