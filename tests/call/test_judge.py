"""Judge: one attempt per call through a function transport (or aiohttp against loopback); `account`."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from support import LEAKED_KEY, SIM_MODEL, leaks

from pipeline.call.client import AiohttpTransport, FunctionTransport, HttpReply, TransportError
from pipeline.call.judge import UNREACHABLE_BEFORE_FATAL, AttemptResult, CallSettings, Judge, account
from pipeline.config.providers import build_body, request_headers
from pipeline.core.cost import Pricing
from pipeline.core.records import Outcome, Status, Usage, Verdict
from pipeline.core.tokens import MESSAGE_OVERHEAD, count_tokens
from pipeline.ratecontrol import AttemptKind
from pipeline.simulator import Faults, SimulatorConfig, start_simulator

PRICING = Pricing(0.075, 0.037, 0.30)
SECRET = "sk-SECRET-judge-4b1e77"
SYSTEM = "Spam policy. Answer 0 or 1."
SYSTEM_TOKENS = 7  # its message overhead included, as PolicyPlan counts it
USER = "buy cheap watches now"
USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 20},
         "completion_tokens_details": {"reasoning_tokens": 25}}
VERDICT = '{"violation": 1, "policy_category": "SP1"}'


def settings(**overrides: Any) -> CallSettings:
    values: dict[str, Any] = dict(
        provider="openai", model="gpt-oss-safeguard-20b", reasoning_effort="low", max_tokens=100,
        request_timeout=2.0, keep_reasoning=False, api_key=SECRET,
    )
    values.update(overrides)
    return CallSettings(**values)


def answer(content: Any, *, finish: str = "stop", usage: dict | None = USAGE, status: int = 200,
           headers: dict[str, str] | None = None, model: str = "served-20b", reasoning: str | None = None) -> HttpReply:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning"] = reasoning
    data: dict[str, Any] = {"model": model, "choices": [{"index": 0, "finish_reason": finish, "message": message}]}
    if usage is not None:
        data["usage"] = usage
    return HttpReply(status, headers or {}, orjson.dumps(data))


def error(status: int, message: str = "nope", headers: dict[str, str] | None = None) -> HttpReply:
    return HttpReply(status, headers or {}, orjson.dumps({"error": {"message": message}}))


class Script:
    """A handler that plays replies in order (an exception instance is raised) and keeps every body."""

    def __init__(self, *replies: HttpReply | Exception) -> None:
        self.replies = list(replies)
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, body: bytes) -> HttpReply:
        self.bodies.append(orjson.loads(body))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply


def make_judge(handler: Callable[[bytes], Awaitable[HttpReply]], **overrides: Any) -> Judge:
    return Judge(transport=FunctionTransport(handler), settings=settings(**overrides))


def attempt(j: Judge, *, user: str = USER, max_tokens: int = 100, poll_url: str | None = None) -> AttemptResult:
    return asyncio.run(j.attempt(system=SYSTEM, system_tokens=SYSTEM_TOKENS, user=user, max_tokens=max_tokens,
                                 poll_url=poll_url))


def attempts(j: Judge, count: int) -> list[AttemptResult]:
    async def go() -> list[AttemptResult]:
        return [await j.attempt(system=SYSTEM, system_tokens=SYSTEM_TOKENS, user=USER, max_tokens=100)
                for _ in range(count)]

    return asyncio.run(go())


def expected_usage(times: int = 1) -> Usage:
    return Usage(prompt_tokens=120 * times, cached_prompt_tokens=20 * times, completion_tokens=30 * times,
                 reasoning_tokens=25 * times)


def accounted(*results: AttemptResult, keep_reasoning: bool = False) -> Outcome:
    outcome = Outcome(Status.FAILED)
    for result in results:
        account(outcome, result, PRICING, keep_reasoning=keep_reasoning)
    return outcome


# ---- one attempt ---------------------------------------------------------------------------------


def test_a_verdict_is_an_answer_billed_at_the_pricing_cost() -> None:
    script = Script(answer(VERDICT))
    result = attempt(make_judge(script))
    assert result.attempt.kind is AttemptKind.ANSWER and result.attempt.error is None
    assert result.verdict == Verdict(1, category="SP1")
    assert result.usage == expected_usage()
    assert result.latency_ms > 0
    assert script.bodies[0]["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    outcome = accounted(result)
    assert (outcome.attempts, outcome.billed_calls) == (1, 1)
    assert outcome.usage == expected_usage()
    assert outcome.cost_usd == PRICING.cost(expected_usage()) == pytest.approx((100 * 0.075 + 20 * 0.037
                                                                                + 30 * 0.30) / 1e6)
    assert outcome.verdict == Verdict(1, category="SP1")
    assert outcome.error is None and outcome.raw_output is None
    assert outcome.finish_reason == "stop" and outcome.served_model == "served-20b"


def test_server_error_is_a_failure_and_not_billed() -> None:
    result = attempt(make_judge(Script(error(500, "boom"))))
    assert (result.attempt.kind, result.attempt.error) == (AttemptKind.FAILED, "HTTP 500: boom")
    assert result.usage is None and result.verdict is None
    outcome = accounted(result)
    assert (outcome.attempts, outcome.billed_calls, outcome.cost_usd) == (1, 0, 0.0)
    assert outcome.error == "HTTP 500: boom"


def test_429_with_retry_after_is_a_refusal_with_the_wait_and_the_headers() -> None:
    result = attempt(make_judge(Script(error(429, "slow down", headers={"Retry-After": "0.05"}))))
    assert (result.attempt.kind, result.attempt.retry_after) == (AttemptKind.REFUSED, 0.05)
    assert result.headers["retry-after"] == "0.05"  # lower-cased, as the rate rules read them


def test_junk_is_invalid_billed_and_kept_as_raw_output() -> None:
    result = attempt(make_judge(Script(answer("I like turtles"))))
    assert result.attempt.kind is AttemptKind.INVALID
    assert result.attempt.error is not None and "not a verdict" in result.attempt.error
    outcome = accounted(result)
    assert outcome.raw_output == "I like turtles" and outcome.billed_calls == 1
    assert outcome.cost_usd == PRICING.cost(expected_usage())


def test_a_refusal_of_the_model_is_invalid_output() -> None:
    result = attempt(make_judge(Script(answer("I'm sorry, I can't help with that."))))
    assert result.attempt.kind is AttemptKind.INVALID
    assert (result.attempt.error or "").startswith("refusal")


@pytest.mark.parametrize("content", ["", None, '{"violation": '])
def test_cut_off_answer_is_truncated_with_the_cap_it_had(content: str | None) -> None:
    result = attempt(make_judge(Script(answer(content, finish="length"))), max_tokens=300)
    assert result.attempt.kind is AttemptKind.TRUNCATED
    assert result.attempt.error == "output cap of 300 tokens reached before an answer"
    assert result.usage == expected_usage()


def test_a_verdict_that_reached_the_cap_is_still_a_verdict() -> None:
    result = attempt(make_judge(Script(answer("1", finish="length"))))
    assert result.attempt.kind is AttemptKind.ANSWER and result.verdict == Verdict(1)


@pytest.mark.parametrize("status", [400, 413, 422])
def test_row_error_is_a_row_error_with_the_hosts_message(status: int) -> None:
    result = attempt(make_judge(Script(error(status, "content too large"))))
    assert (result.attempt.kind, result.attempt.error) == (AttemptKind.ROW_ERROR, f"HTTP {status}: content too large")


@pytest.mark.parametrize("status", [401, 402, 403, 404])
def test_key_credit_or_url_errors_are_fatal_and_redacted(status: int) -> None:
    result = attempt(make_judge(Script(error(status, f"bad key {SECRET}"))))
    assert result.attempt.kind is AttemptKind.FATAL
    assert result.attempt.error == f"HTTP {status}: bad key [redacted]"


def test_transport_error_is_a_failure_with_its_message() -> None:
    result = attempt(make_judge(Script(TransportError("server closed the connection"))))
    assert (result.attempt.kind, result.attempt.error) == (AttemptKind.FAILED, "server closed the connection")
    assert result.usage is None and result.headers is None


def test_slow_answer_is_a_timeout() -> None:
    async def handler(body: bytes) -> HttpReply:
        await asyncio.sleep(1.0)
        return answer("1")

    result = attempt(make_judge(handler, request_timeout=0.05))
    assert result.attempt.kind is AttemptKind.TIMEOUT
    assert result.attempt.error == "no answer within 0.05 s"


def test_200_that_is_not_a_completion_is_a_failure() -> None:
    result = attempt(make_judge(Script(HttpReply(200, {}, b"<html>gateway</html>"))))
    assert result.attempt.kind is AttemptKind.FAILED and result.usage is None


def test_filtered_answer_is_billed() -> None:
    result = attempt(make_judge(Script(answer("", finish="content_filter"))))
    assert result.attempt.kind is AttemptKind.FILTERED
    assert accounted(result).billed_calls == 1


# ---- an unreachable endpoint ---------------------------------------------------------------------


def test_unreachable_endpoint_is_fatal_after_three_connection_failures_before_any_answer() -> None:
    script = Script(TransportError("cannot connect to 127.0.0.1:9", unreachable=True))
    results = attempts(make_judge(script), UNREACHABLE_BEFORE_FATAL)
    assert UNREACHABLE_BEFORE_FATAL == 3
    assert [r.attempt.kind for r in results] == [AttemptKind.FAILED, AttemptKind.FAILED, AttemptKind.FATAL]
    assert results[-1].attempt.error == ("cannot connect to 127.0.0.1:9: is the server running and the base URL "
                                         "right?")


def test_connection_failures_after_an_answer_are_only_failures() -> None:
    script = Script(answer("1"), *[TransportError("cannot connect", unreachable=True)] * 5)
    results = attempts(make_judge(script), 6)
    assert results[0].attempt.kind is AttemptKind.ANSWER
    assert {r.attempt.kind for r in results[1:]} == {AttemptKind.FAILED}


def test_a_refused_port_over_real_http_stops_the_run_at_the_third_attempt() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def go() -> list[AttemptResult]:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        async with AiohttpTransport(url=url, headers=request_headers("openai", SECRET), connections=1) as t:
            j = Judge(transport=t, settings=settings())
            return [await j.attempt(system=SYSTEM, system_tokens=SYSTEM_TOKENS, user=USER, max_tokens=100)
                    for _ in range(3)]

    results = asyncio.run(go())
    assert [r.attempt.kind for r in results] == [AttemptKind.FAILED, AttemptKind.FAILED, AttemptKind.FATAL]
    assert f"cannot connect to 127.0.0.1:{port}" in (results[-1].attempt.error or "")


# ---- secrets -------------------------------------------------------------------------------------


def test_error_body_echoing_the_api_key_is_redacted() -> None:
    result = attempt(make_judge(Script(error(400, f"invalid request from key {SECRET} please check"))))
    assert result.attempt.error == "HTTP 400: invalid request from key [redacted] please check"
    assert SECRET not in repr(accounted(result))


def _escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


def test_an_error_or_answer_echoing_the_key_in_json_escapes_is_redacted() -> None:
    refused = HttpReply(429, {}, ('{"error": {"message": "daily cap of key ' + _escaped(SECRET) + '"}}').encode())
    result = attempt(make_judge(Script(refused)))
    assert result.attempt.error == "HTTP 429: daily cap of key [redacted]"
    body = orjson.dumps({"choices": [{"finish_reason": "stop", "message": {"content": "1 KEY", "reasoning": "KEY"}}]})
    body = body.replace(b"KEY", _escaped(SECRET).encode())
    result = attempt(make_judge(Script(HttpReply(200, {}, body)), keep_reasoning=True))
    assert result.completion is not None
    assert (result.completion.content, result.completion.reasoning) == ("1 [redacted]", "[redacted]")


def test_transport_error_echoing_the_api_key_is_redacted() -> None:
    result = attempt(make_judge(Script(TransportError(f"proxy refused Bearer {SECRET}"))))
    assert result.attempt.error == "proxy refused Bearer [redacted]"


def test_raw_output_and_reasoning_echoing_the_key_are_redacted() -> None:
    script = Script(answer(f"your key is {SECRET}", reasoning=f"the user sent {SECRET}"))
    result = attempt(make_judge(script, keep_reasoning=True))
    outcome = accounted(result, keep_reasoning=True)
    assert outcome.raw_output == "your key is [redacted]"
    assert outcome.reasoning == "the user sent [redacted]"
    assert SECRET not in repr(outcome) and SECRET not in repr(result)


RATIONALE_POLICY = ('Spam policy: buy now. Answer {"violation": 0 or 1, "policy_category": ..., "rule_ids": [...], '
                    '"confidence": ..., "rationale": "..."}')


def echoed_attempt(user: str, **faults: float) -> tuple[AttemptResult, Outcome]:
    """One attempt over loopback against a simulator that repeats the key in every form, and its outcome."""

    async def go() -> AttemptResult:
        sim = SimulatorConfig(api_key=LEAKED_KEY, echo_key=True, faults=Faults(**faults))
        async with start_simulator(sim) as server, AiohttpTransport(
                url=server.chat_url, headers=request_headers("openai", LEAKED_KEY), connections=1) as transport:
            judge = Judge(transport=transport, settings=settings(model=SIM_MODEL, api_key=LEAKED_KEY,
                                                                 keep_reasoning=True, max_tokens=4000))
            return await judge.attempt(system=RATIONALE_POLICY, system_tokens=40, user=user, max_tokens=4000)

    result = asyncio.run(go())
    return result, accounted(result, keep_reasoning=True)


def test_the_key_json_escaped_in_model_provider_and_finish_reason_never_reaches_the_outcome() -> None:
    result, outcome = echoed_attempt("buy now")
    assert result.verdict is not None and result.verdict.violation == 1
    assert outcome.served_model == f"{SIM_MODEL} [redacted]"
    assert outcome.provider == "Simulator [redacted]" and outcome.finish_reason == "stop [redacted]"
    assert "[redacted]" in (result.verdict.rationale or "") and "[redacted]" in (outcome.reasoning or "")
    assert leaks(repr(outcome)) == []
    assert leaks(repr((result.attempt, result.completion, result.verdict))) == []  # headers only feed the limiter


def test_raw_output_and_error_texts_hold_no_encoding_of_the_key() -> None:
    _, junk = echoed_attempt("hello", junk_output=1.0)
    assert junk.raw_output is not None and "[redacted]" in junk.raw_output and leaks(junk.raw_output) == []
    rejected, outcome = echoed_attempt("[[reject]]")
    assert rejected.attempt.kind is AttemptKind.ROW_ERROR and "[redacted]" in (outcome.error or "")
    assert leaks(repr(outcome)) == []


def test_an_error_text_cut_to_one_line_never_keeps_the_start_of_the_key() -> None:
    spelled = "".join(f"\\u{ord(c):04x}" for c in SECRET)  # 132 characters, cut at 200 after the filler
    result = attempt(make_judge(Script(error(400, "x" * 150 + " " + spelled))))
    assert result.attempt.error == "HTTP 400: " + "x" * 150 + " [redacted]"


# ---- usage and accounting ------------------------------------------------------------------------


def test_answer_without_usage_is_estimated() -> None:
    content = '{"violation": 0, "policy_category": null}'
    result = attempt(make_judge(Script(answer(content, usage=None))))
    usage = result.usage
    assert usage is not None and usage.estimated is True
    assert usage.prompt_tokens == SYSTEM_TOKENS + count_tokens(USER) + MESSAGE_OVERHEAD
    assert usage.completion_tokens == count_tokens(content) > 0
    outcome = accounted(result)
    assert outcome.usage.estimated and outcome.cost_usd == PRICING.cost(usage) > 0


def test_estimated_usage_counts_the_reasoning_as_completion() -> None:
    result = attempt(make_judge(Script(answer("1", usage=None, reasoning="it sells watches"))))
    assert result.usage is not None
    assert result.usage.reasoning_tokens == count_tokens("it sells watches") > 0
    assert result.usage.completion_tokens == count_tokens("1") + result.usage.reasoning_tokens


def test_account_sums_every_billed_attempt_and_a_verdict_clears_the_junk() -> None:
    results = attempts(make_judge(Script(error(500), answer("hmm"), answer("1"))), 3)
    outcome = accounted(*results)
    assert (outcome.attempts, outcome.billed_calls) == (3, 2)
    assert outcome.usage == expected_usage(2)
    assert outcome.cost_usd == pytest.approx(2 * PRICING.cost(expected_usage()))
    assert outcome.raw_output is None and outcome.error is None and outcome.verdict == Verdict(1)


def test_account_does_not_alias_the_first_usage() -> None:
    results = attempts(make_judge(Script(answer("hmm"))), 2)
    accounted(*results)
    assert results[0].usage == expected_usage()


def test_keep_reasoning_keeps_the_reasoning_only_when_asked() -> None:
    reply = answer("1", reasoning="it sells watches")
    kept = accounted(attempt(make_judge(Script(reply))), keep_reasoning=True)
    dropped = accounted(attempt(make_judge(Script(reply))), keep_reasoning=False)
    assert kept.reasoning == "it sells watches"
    assert dropped.reasoning is None


# ---- a queued answer -----------------------------------------------------------------------------


class Recorder:
    """A transport that records (url, body) and answers from a script."""

    def __init__(self, *replies: HttpReply) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[str | None, bytes]] = []

    async def post(self, body: bytes, *, timeout: float, url: str | None = None) -> HttpReply:
        self.calls.append((url, body))
        return self.replies.pop(0)


def test_a_queued_answer_is_fetched_from_its_url_with_the_key_in_the_body() -> None:
    url = "https://modelslab.com/api/v6/llm/fetch/8b5f"
    transport = Recorder(HttpReply(200, {}, orjson.dumps({"status": "processing", "fetch_result": url, "eta": 2})),
                         answer("0"))
    j = Judge(transport=transport, settings=settings(provider="modelslab"))

    async def go() -> list[AttemptResult]:
        first = await j.attempt(system=SYSTEM, system_tokens=SYSTEM_TOKENS, user=USER, max_tokens=100)
        assert first.attempt.poll_url == url
        second = await j.attempt(system=SYSTEM, system_tokens=SYSTEM_TOKENS, user=USER, max_tokens=100,
                                 poll_url=first.attempt.poll_url)
        return [first, second]

    first, second = asyncio.run(go())
    assert (first.attempt.kind, first.attempt.retry_after) == (AttemptKind.QUEUED, 2.0)
    assert second.attempt.kind is AttemptKind.ANSWER and second.verdict == Verdict(0)
    assert transport.calls[0][0] is None
    assert transport.calls[1] == (url, orjson.dumps({"key": SECRET}))


# ---- request bodies ------------------------------------------------------------------------------

AWKWARD = [
    "plain",
    'she said "hi"',
    "back\\slash \\n not a newline",
    "nul \x00 byte",
    "emoji 🙂👍🏽 and accents éà",
    "line\nbreaks\r\nand\ttabs",
    "\u0000content\u0000",
    "",
    "</script><|start|>",
]


@pytest.mark.parametrize("provider", ["openai", "openrouter", "groq", "modelslab", "simulator"])
@pytest.mark.parametrize("keep_reasoning", [False, True])
def test_body_equals_the_provider_body_for_awkward_contents(provider: str, keep_reasoning: bool) -> None:
    j = make_judge(Script(answer("1")), provider=provider, keep_reasoning=keep_reasoning)
    for system in (SYSTEM, 'Policy with "quotes" \\ and 🙂'):
        for max_tokens in (100, 200):
            for user in AWKWARD:
                expected = orjson.dumps(build_body(
                    provider, model="gpt-oss-safeguard-20b", system=system, user=user, reasoning_effort="low",
                    max_tokens=max_tokens, keep_reasoning=keep_reasoning, api_key=SECRET))
                assert j.body(system, user, max_tokens) == expected, (provider, system, user)


def test_the_sent_body_carries_the_attempts_output_cap() -> None:
    script = Script(answer("1"))
    attempt(make_judge(script), max_tokens=800)
    groq = Script(answer("1"))
    attempt(make_judge(groq, provider="groq"), max_tokens=64)
    assert script.bodies[0]["max_tokens"] == 800
    assert groq.bodies[0]["max_completion_tokens"] == 64 and "max_tokens" not in groq.bodies[0]


def test_body_without_api_key_has_no_key_field() -> None:
    j = make_judge(Script(answer("1")), provider="modelslab", api_key=None)
    body = orjson.loads(j.body(SYSTEM, USER, 100))
    assert "key" not in body and body["model_id"] == "gpt-oss-safeguard-20b"


def test_latency_is_measured_per_attempt() -> None:
    async def handler(body: bytes) -> HttpReply:
        await asyncio.sleep(0.02)
        return answer("1")

    started = time.perf_counter()
    result = attempt(make_judge(handler))
    assert 19.0 <= result.latency_ms <= (time.perf_counter() - started) * 1000.0
