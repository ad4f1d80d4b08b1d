"""One attempt at a verdict for one (text, policy): build the body, send it, read what came back.

Layered one concern per step, the way httpx layers ``send``:

    Judge.attempt      one attempt, never raises for a row
      Judge.body         the request body (a per-policy template with the content spliced in)
      Judge._send        the transport call; transport errors become a typed `Attempt`
      read_reply         what the host said (pipeline.call.answers: completion, refusal, error shapes)
      _verdict           the completion parsed into a verdict, or why it is none

What happens next (accept, retry later, poll, give up, stop the run) is not decided here: the worker
passes the `Attempt` to `pipeline.ratecontrol.decide`. `account` adds an attempt's bill to the row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import orjson

from pipeline.call.answers import Completion, read_reply
from pipeline.call.client import Transport, TransportError
from pipeline.call.parser import InvalidOutput, PolicyLabels, parse_verdict
from pipeline.call.redact import Redactor
from pipeline.config.providers import build_body
from pipeline.core.cost import Pricing
from pipeline.core.records import Outcome, Usage, Verdict
from pipeline.core.tokens import MESSAGE_OVERHEAD, count_tokens
from pipeline.ratecontrol import Attempt, AttemptKind

_PLACEHOLDER = "\u0000content\u0000"
#: connection failures, before any answer at all, that make the endpoint count as unreachable.
UNREACHABLE_BEFORE_FATAL = 3


@dataclass(slots=True)
class CallSettings:
    provider: str
    model: str
    reasoning_effort: str
    max_tokens: int
    request_timeout: float
    keep_reasoning: bool
    api_key: str | None
    #: a structured-output request (pipeline.plan.schemas.response_format), or None
    response_format: dict | None = None
    #: the policy's own labels (output format "policy"); None: our formats, read by `parse_verdict`
    read_verdict: PolicyLabels | None = None

    @property
    def keep_answer(self) -> bool:
        """An answer in the policy's own format holds more than its label: it is kept whole."""
        return self.read_verdict is not None


@dataclass(slots=True)
class AttemptResult:
    attempt: Attempt
    headers: Mapping[str, str] | None = None
    completion: Completion | None = None
    verdict: Verdict | None = None
    #: what this attempt was billed (estimated when the host sent no usage); None if not billed
    usage: Usage | None = None
    latency_ms: float = 0.0
    #: keep the answer text with its verdict (an answer in the policy's own format)
    keep_answer: bool = False


class Judge:
    """Sends attempts through a transport. Holds no per-row state."""

    def __init__(self, *, transport: Transport, settings: CallSettings) -> None:
        self.transport = transport
        self.settings = settings
        self.redactor = Redactor(settings.api_key)
        self._templates: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        # an endpoint that never answered once and refuses connections is a wrong URL or a server
        # that is down: stop the run instead of retrying every row
        self._answered = False
        self._unreachable = 0

    def body(self, system: str, user: str, max_tokens: int) -> bytes:
        """The request body: a per-(policy, output cap) template with the content spliced in.

        JSON string encoding does not depend on context, so encoding the content alone and placing
        it between the template's two halves gives exactly ``orjson.dumps(build_body(...))``.
        """
        template = self._templates.get((system, max_tokens))
        if template is None:
            s = self.settings
            whole = orjson.dumps(build_body(
                s.provider, model=s.model, system=system, user=_PLACEHOLDER, reasoning_effort=s.reasoning_effort,
                max_tokens=max_tokens, keep_reasoning=s.keep_reasoning, api_key=s.api_key,
                response_format=s.response_format,
            ))
            prefix, _, suffix = whole.partition(orjson.dumps(_PLACEHOLDER))
            template = self._templates[(system, max_tokens)] = (prefix, suffix)
        prefix, suffix = template
        return prefix + orjson.dumps(user) + suffix

    async def attempt(self, *, system: str, system_tokens: int, user: str, max_tokens: int,
                      poll_url: str | None = None) -> AttemptResult:
        """Send one attempt (or fetch a queued answer from ``poll_url``) and read the reply."""
        if poll_url is None:
            body = self.body(system, user, max_tokens)
        else:  # ModelsLab's fetch endpoint takes the key in the body, like its other endpoints
            body = orjson.dumps({"key": self.settings.api_key} if self.settings.api_key else {})
        started = time.perf_counter()
        try:
            reply = await self.transport.post(body, timeout=self.settings.request_timeout, url=poll_url)
        except TransportError as exc:
            return AttemptResult(self._transport_failure(exc))
        latency_ms = (time.perf_counter() - started) * 1000.0
        self._answered = True
        body, now = self.redactor.body(reply.body), time.time()
        reading = read_reply(reply.status, reply.headers, body, now=now)
        if reading.completion is None and (clean := self.redactor.strings(body)) is not body:
            # an error's text is cut to one line as it is read: take the key out of the body first
            reading = read_reply(reply.status, reply.headers, clean, now=now)
        headers = reply.headers if reading.headers is None else reading.headers
        result = AttemptResult(self._redacted(reading.attempt), headers, reading.completion, latency_ms=latency_ms,
                               keep_answer=self.settings.keep_answer)
        if reading.completion is not None:
            self.redactor.completion(reading.completion)
            result.usage = reading.completion.usage or _estimate_usage(system_tokens, user, reading.completion)
            if reading.attempt.kind is AttemptKind.ANSWER:
                self._verdict(result, max_tokens, self.settings.read_verdict)
                if result.verdict is not None:
                    result.verdict = self.redactor.verdict(result.verdict, answer=reading.completion.content or "")
        return result

    def _redacted(self, attempt: Attempt) -> Attempt:
        """The attempt with the key out of its error text, in any form (see `pipeline.call.redact.Redactor`)."""
        error = attempt.error
        if error and (clean := self.redactor.text(error)) is not error:
            return replace(attempt, error=clean)
        return attempt

    def _transport_failure(self, exc: TransportError) -> Attempt:
        message = self.redactor.text(str(exc))
        if exc.unreachable and not self._answered:
            self._unreachable += 1
            if self._unreachable >= UNREACHABLE_BEFORE_FATAL:
                return Attempt(AttemptKind.FATAL, f"{message}: is the server running and the base URL right?")
        return Attempt(AttemptKind.TIMEOUT if exc.timeout else AttemptKind.FAILED, message)

    @staticmethod
    def _verdict(result: AttemptResult, max_tokens: int, read: Callable[[str], Verdict] | None = None) -> None:
        completion = result.completion
        assert completion is not None
        try:
            result.verdict = (read or parse_verdict)(completion.content or "")
        except InvalidOutput as exc:
            if completion.finish_reason == "length":
                result.attempt = Attempt(AttemptKind.TRUNCATED,
                                         f"output cap of {max_tokens} tokens reached before an answer")
            else:
                result.attempt = Attempt(AttemptKind.INVALID, str(exc))


def account(outcome: Outcome, result: AttemptResult, pricing: Pricing, *, keep_reasoning: bool) -> None:
    """Add one attempt to the row's outcome: its bill, latency, and what the host answered."""
    outcome.attempts += 1
    outcome.error = result.attempt.error
    if result.latency_ms:
        outcome.latency_ms = result.latency_ms
    usage, completion = result.usage, result.completion
    if usage is None or completion is None:
        return
    if outcome.billed_calls:
        outcome.usage.add(usage)
    else:
        outcome.usage = Usage(usage.prompt_tokens, usage.cached_prompt_tokens, usage.completion_tokens,
                              usage.reasoning_tokens, usage.estimated, usage.server_cost_usd)
    outcome.billed_calls += 1
    outcome.cost_usd += pricing.cost(usage)
    outcome.finish_reason = completion.finish_reason
    outcome.served_model = completion.model
    outcome.provider = completion.provider
    outcome.verdict = result.verdict
    outcome.raw_output = None if result.verdict is not None and not result.keep_answer else (
        completion.content or None)
    if keep_reasoning:
        outcome.reasoning = completion.reasoning


def _estimate_usage(system_tokens: int, user: str, completion: Completion) -> Usage:
    """The host sent no usage: count it ourselves and mark it as an estimate."""
    reasoning = count_tokens(completion.reasoning or "")
    return Usage(
        prompt_tokens=system_tokens + count_tokens(user) + MESSAGE_OVERHEAD,
        completion_tokens=count_tokens(completion.content or "") + reasoning,
        reasoning_tokens=reasoning,
        estimated=True,
    )
