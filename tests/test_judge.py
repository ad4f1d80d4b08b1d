"""Judge: one verdict per (text, policy) through a function transport and a real throttle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

import pipeline.judge as judge_module
from pipeline.client import FunctionTransport, HttpReply, TransportError
from pipeline.cost import Pricing
from pipeline.judge import CallSettings, FatalEndpointError, Judge
from pipeline.providers import build_body
from pipeline.records import Outcome, Status, Usage, Verdict
from pipeline.throttle import Throttle
from pipeline.tokens import MESSAGE_OVERHEAD, count_tokens

PRICING = Pricing(0.075, 0.037, 0.30)
SECRET = "sk-SECRET-judge-4b1e77"
SYSTEM = "Spam policy. Answer 0 or 1."
SYSTEM_TOKENS = 7
USER = "buy cheap watches now"
USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 20},
         "completion_tokens_details": {"reasoning_tokens": 25}}
VERDICT = '{"violation": 1, "policy_category": "SP1"}'


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(judge_module, "backoff_delay", lambda attempt, **kw: 0.0)


def settings(**overrides: Any) -> CallSettings:
    values: dict[str, Any] = dict(
        provider="openai", model="gpt-oss-safeguard-20b", reasoning_effort="low", max_tokens=100,
        max_tokens_cap=400, request_timeout=2.0, max_attempts=4, invalid_output_retries=2,
        keep_reasoning=False, api_key=SECRET,
    )
    values.update(overrides)
    return CallSettings(**values)


def answer(content: str | None, *, finish: str = "stop", usage: dict | None = USAGE, status: int = 200,
           headers: dict[str, str] | None = None, model: str = "served-20b") -> HttpReply:
    data: dict[str, Any] = {"model": model, "choices": [{"index": 0, "finish_reason": finish,
                                                         "message": {"role": "assistant", "content": content}}]}
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
        self.times: list[float] = []

    async def __call__(self, body: bytes) -> HttpReply:
        self.bodies.append(orjson.loads(body))
        self.times.append(time.monotonic())
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply


def make_judge(handler: Callable[[bytes], Awaitable[HttpReply]], *, throttle: Throttle | None = None,
               **overrides: Any) -> Judge:
    return Judge(transport=FunctionTransport(handler),
                 throttle=throttle or Throttle(rpm=None, tpm=None, adaptive=False),
                 settings=settings(**overrides), pricing=PRICING)


def judge(j: Judge, user: str = USER) -> Outcome:
    return asyncio.run(j.judge(system=SYSTEM, system_tokens=SYSTEM_TOKENS, user=user))


def expected_usage(times: int = 1) -> Usage:
    return Usage(prompt_tokens=120 * times, cached_prompt_tokens=20 * times, completion_tokens=30 * times,
                 reasoning_tokens=25 * times)


# ---- success and retries ------------------------------------------------------------------------


def test_first_answer_is_a_verdict_billed_once_at_the_pricing_cost() -> None:
    script = Script(answer(VERDICT))
    outcome = judge(make_judge(script))
    assert outcome.status is Status.OK
    assert outcome.verdict == Verdict(1, category="SP1")
    assert (outcome.attempts, outcome.billed_calls) == (1, 1)
    assert outcome.usage == expected_usage()
    assert outcome.cost_usd == PRICING.cost(expected_usage()) == pytest.approx((100 * 0.075 + 20 * 0.037
                                                                                + 30 * 0.30) / 1e6)
    assert outcome.error is None and outcome.raw_output is None
    assert outcome.finish_reason == "stop" and outcome.served_model == "served-20b"
    assert outcome.latency_ms > 0
    assert len(script.bodies) == 1
    assert script.bodies[0]["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]


def test_server_error_is_retried_and_not_billed() -> None:
    script = Script(error(500, "boom"), answer("0"))
    outcome = judge(make_judge(script))
    assert outcome.status is Status.OK and outcome.verdict == Verdict(0)
    assert (outcome.attempts, outcome.billed_calls) == (2, 1)
    assert outcome.usage == expected_usage()
    assert outcome.cost_usd == PRICING.cost(expected_usage())
    assert outcome.error is None
    assert len(script.bodies) == 2 and script.bodies[0] == script.bodies[1]


def test_429_with_retry_after_pauses_the_shared_throttle_then_succeeds() -> None:
    throttle = Throttle(rpm=None, tpm=None, adaptive=False)
    script = Script(error(429, "slow down", headers={"Retry-After": "0.05"}), answer("1"))
    before = time.monotonic()
    outcome = judge(make_judge(script, throttle=throttle))
    after = time.monotonic()
    assert outcome.status is Status.OK and outcome.verdict == Verdict(1)
    assert (outcome.attempts, outcome.billed_calls) == (2, 1)
    assert throttle.throttled == 1
    assert before + 0.05 <= throttle.limits.paused_until <= after + 0.05
    assert script.times[1] - script.times[0] >= 0.045


def test_junk_answers_are_retried_then_invalid_output_with_every_answer_billed() -> None:
    script = Script(answer("I like turtles", usage={"prompt_tokens": 100, "completion_tokens": 10}),
                    answer("still not sure", usage={"prompt_tokens": 100, "completion_tokens": 20}),
                    answer("the weather is nice", usage={"prompt_tokens": 100, "completion_tokens": 40}))
    outcome = judge(make_judge(script, invalid_output_retries=2, max_attempts=6))
    assert outcome.status is Status.INVALID_OUTPUT
    assert outcome.verdict is None
    assert (outcome.attempts, outcome.billed_calls) == (3, 3)
    assert len(script.bodies) == 3
    assert outcome.raw_output == "the weather is nice"
    assert outcome.error is not None and "not a verdict" in outcome.error
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens) == (300, 70)
    assert outcome.cost_usd == pytest.approx((300 * 0.075 + 70 * 0.30) / 1e6)


def test_invalid_output_retries_zero_gives_up_after_one_billed_answer() -> None:
    script = Script(answer("I'm sorry, I can't help with that."))
    outcome = judge(make_judge(script, invalid_output_retries=0))
    assert outcome.status is Status.INVALID_OUTPUT
    assert (outcome.attempts, outcome.billed_calls) == (1, 1)
    assert outcome.error is not None and outcome.error.startswith("refusal")


def test_junk_then_verdict_is_ok_and_clears_the_junk() -> None:
    script = Script(answer("hmm"), answer("1"))
    outcome = judge(make_judge(script))
    assert outcome.status is Status.OK
    assert outcome.raw_output is None and outcome.error is None
    assert outcome.billed_calls == 2
    assert outcome.usage == expected_usage(2)


def test_cut_off_answer_is_retried_with_a_doubled_cap_up_to_the_limit_then_truncated() -> None:
    script = Script(answer("", finish="length"))
    outcome = judge(make_judge(script, max_tokens=100, max_tokens_cap=300, max_attempts=6))
    assert [b["max_tokens"] for b in script.bodies] == [100, 200, 300]
    assert outcome.status is Status.TRUNCATED
    assert (outcome.attempts, outcome.billed_calls) == (3, 3)
    assert outcome.finish_reason == "length"
    assert outcome.error == "output cap of 300 tokens reached before an answer"
    assert outcome.raw_output is None
    assert outcome.usage == expected_usage(3)


def test_cut_off_answer_then_verdict_at_the_bigger_cap_is_ok() -> None:
    script = Script(answer(None, finish="length"), answer("0"))
    outcome = judge(make_judge(script, max_tokens=100, max_tokens_cap=400))
    assert [b["max_tokens"] for b in script.bodies] == [100, 200]
    assert outcome.status is Status.OK and outcome.verdict == Verdict(0)
    assert outcome.error is None


def test_groq_doubles_max_completion_tokens() -> None:
    script = Script(answer("", finish="length"))
    outcome = judge(make_judge(script, provider="groq", max_tokens=64, max_tokens_cap=256))
    assert [b["max_completion_tokens"] for b in script.bodies] == [64, 128, 256]
    assert all("max_tokens" not in b for b in script.bodies)
    assert outcome.status is Status.TRUNCATED


def test_cap_already_at_limit_is_truncated_after_one_attempt() -> None:
    script = Script(answer("", finish="length"))
    outcome = judge(make_judge(script, max_tokens=100, max_tokens_cap=100))
    assert outcome.status is Status.TRUNCATED
    assert outcome.attempts == 1 and len(script.bodies) == 1


# ---- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 413, 422])
def test_row_error_is_rejected_after_one_attempt(status: int) -> None:
    script = Script(error(status, "content too large"), answer("1"))
    outcome = judge(make_judge(script))
    assert outcome.status is Status.REJECTED
    assert outcome.attempts == 1 and outcome.billed_calls == 0 and outcome.cost_usd == 0.0
    assert outcome.error == f"HTTP {status}: content too large"
    assert len(script.bodies) == 1


@pytest.mark.parametrize("status", [401, 402, 403, 404])
def test_key_credit_or_url_errors_stop_the_run(status: int) -> None:
    script = Script(error(status, f"bad key {SECRET}"), answer("1"))
    with pytest.raises(FatalEndpointError) as caught:
        judge(make_judge(script))
    assert str(caught.value) == f"HTTP {status}: bad key [redacted]"
    assert len(script.bodies) == 1


def test_transport_errors_until_attempts_run_out_fail_the_row() -> None:
    script = Script(TransportError("server closed the connection"))
    outcome = judge(make_judge(script, max_attempts=3))
    assert outcome.status is Status.FAILED
    assert outcome.attempts == 3 and len(script.bodies) == 3
    assert outcome.error == "server closed the connection (after 3 attempts)"
    assert outcome.billed_calls == 0 and outcome.cost_usd == 0.0 and outcome.verdict is None


def test_server_errors_until_attempts_run_out_fail_with_the_last_status() -> None:
    script = Script(error(503, "overloaded"))
    outcome = judge(make_judge(script, max_attempts=2))
    assert outcome.status is Status.FAILED
    assert outcome.error == "HTTP 503: overloaded (after 2 attempts)"


def test_slow_answer_is_a_timeout_and_is_retried() -> None:
    calls = 0

    async def handler(body: bytes) -> HttpReply:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(1.0)
        return answer("1")

    outcome = judge(make_judge(handler, request_timeout=0.05))
    assert outcome.status is Status.OK
    assert outcome.attempts == 2 and outcome.billed_calls == 1


def test_200_that_is_not_a_completion_is_retried() -> None:
    script = Script(HttpReply(200, {}, b"<html>gateway</html>"), answer("0"))
    outcome = judge(make_judge(script))
    assert outcome.status is Status.OK
    assert (outcome.attempts, outcome.billed_calls) == (2, 1)


def test_error_body_echoing_the_api_key_is_redacted() -> None:
    script = Script(error(400, f"invalid request from key {SECRET} please check"))
    outcome = judge(make_judge(script))
    assert outcome.status is Status.REJECTED
    assert outcome.error == "HTTP 400: invalid request from key [redacted] please check"
    assert SECRET not in repr(outcome)


def test_transport_error_echoing_the_api_key_is_redacted() -> None:
    script = Script(TransportError(f"proxy refused Bearer {SECRET}"))
    outcome = judge(make_judge(script, max_attempts=1))
    assert outcome.error == "proxy refused Bearer [redacted] (after 1 attempts)"


# ---- usage --------------------------------------------------------------------------------------


def test_answer_without_usage_is_estimated() -> None:
    script = Script(answer('{"violation": 0, "policy_category": null}', usage=None))
    outcome = judge(make_judge(script))
    assert outcome.status is Status.OK
    usage = outcome.usage
    assert usage.estimated is True
    assert usage.prompt_tokens == SYSTEM_TOKENS + count_tokens(USER) + 2 * MESSAGE_OVERHEAD
    assert usage.completion_tokens == count_tokens('{"violation": 0, "policy_category": null}') > 0
    assert outcome.cost_usd == PRICING.cost(usage) > 0


def test_keep_reasoning_keeps_the_reasoning_only_when_asked() -> None:
    body = orjson.dumps({"choices": [{"finish_reason": "stop",
                                      "message": {"content": "1", "reasoning": "it sells watches"}}],
                         "usage": USAGE})
    kept = judge(make_judge(Script(HttpReply(200, {}, body)), keep_reasoning=True))
    dropped = judge(make_judge(Script(HttpReply(200, {}, body)), keep_reasoning=False))
    assert kept.reasoning == "it sells watches"
    assert dropped.reasoning is None


# ---- request bodies -----------------------------------------------------------------------------

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


def test_body_without_api_key_has_no_key_field() -> None:
    j = make_judge(Script(answer("1")), provider="modelslab", api_key=None)
    body = orjson.loads(j.body(SYSTEM, USER, 100))
    assert "key" not in body and body["model_id"] == "gpt-oss-safeguard-20b"
