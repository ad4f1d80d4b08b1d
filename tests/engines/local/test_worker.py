"""The Dispatcher: one row's attempts end to end (decide, retries through WorkQueue.defer, budget, stop)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import make_config, run_pipeline, write_jsonl

from pipeline.call.client import FunctionTransport, HttpReply, TransportError
from pipeline.call.judge import CallSettings, Judge
from pipeline.call.router import Route, Router
from pipeline.core.cost import Pricing
from pipeline.core.records import Policy, Status, Usage, Verdict
from pipeline.engines.local.worker import Dispatcher, charged_usd
from pipeline.engines.local.workqueue import WorkQueue
from pipeline.plan.planner import Slot, Task, make_policy_plan
from pipeline.plan.shards import Shard
from pipeline.ratecontrol import RateControl, RetryRules, RetryState
from pipeline.ratecontrol.budget import Budget
from pipeline.simulator import Faults, SimulatorConfig

PRICING = Pricing(0.075, 0.037, 0.30)
USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 20},
         "completion_tokens_details": {"reasoning_tokens": 25}}
PLAN = make_policy_plan(0, Policy("spam", "# Spam"), system="Spam policy.", key=b"k", system_tokens=7,
                        context_tokens=131072, max_tokens=100)
#: tiny backoff so retries take milliseconds
RULES = RetryRules(max_attempts=3, max_refusals=5, invalid_output_retries=2, max_tokens_cap=300,
                   backoff_base=0.001, backoff_cap=0.01)


def answer(content: str | None, *, finish: str = "stop", usage: dict | None = USAGE) -> HttpReply:
    data: dict[str, Any] = {"model": "served", "choices": [{"finish_reason": finish,
                                                            "message": {"content": content}}]}
    if usage is not None:
        data["usage"] = usage
    return HttpReply(200, {}, orjson.dumps(data))


def error(status: int, message: str = "nope", headers: dict[str, str] | None = None) -> HttpReply:
    return HttpReply(status, headers or {}, orjson.dumps({"error": {"message": message}}))


class Script:
    def __init__(self, *replies: HttpReply | Exception) -> None:
        self.replies = list(replies)
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, body: bytes) -> HttpReply:
        self.bodies.append(orjson.loads(body))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply


def task(user: str = "buy cheap watches", max_tokens: int = 100) -> Task:
    slot = Slot(Shard(0, 0), 0, "r1", 0, "in.jsonl", PLAN)
    return Task(b"fp" + user.encode(), user, slot, prompt_tokens=20, retry=RetryState(max_tokens=max_tokens))


@dataclass
class Ran:
    finished: list[tuple[Task, str]]
    stops: list[tuple[Status, str | None]]
    dispatcher: Dispatcher
    control: RateControl
    budget: Budget = field(default_factory=lambda: Budget(None))


def dispatch(script: Script, *tasks: Task, rules: RetryRules = RULES, workers: int = 1,
             budget: Budget | None = None, control: RateControl | None = None) -> Ran:
    async def go() -> Ran:
        queue: WorkQueue[Task] = WorkQueue(high=16)
        finished: list[tuple[Task, str]] = []
        stops: list[tuple[Status, str | None]] = []
        judge = Judge(transport=FunctionTransport(script), settings=CallSettings(
            provider="openai", model="m", reasoning_effort="low", max_tokens=100, request_timeout=1.0,
            keep_reasoning=False, api_key="sk-x-0123456789"))
        rate = control or RateControl(rpm=None, tpm=None)
        money = budget or Budget(None)

        def stop(status: Status, error: str | None) -> None:
            stops.append((status, error))
            if dispatcher.stop_status is None:
                dispatcher.stop_status = status
                queue.stop()

        async def pace() -> None:
            return None

        router = Router([Route("openai", judge, rate, PRICING, concurrency=workers)])
        dispatcher = Dispatcher(queue=queue, router=router, rules=rules, budget=money, pricing=PRICING,
                                keep_reasoning=False, finish=lambda t, s: finished.append((t, s)), pace=pace,
                                stop=stop, released=asyncio.Event(), rng=random.Random(1))
        await queue.put_many(tasks)
        queue.close()
        await asyncio.wait_for(asyncio.gather(*(dispatcher.work() for _ in range(workers))), timeout=10.0)
        return Ran(finished, stops, dispatcher, rate, money)

    return asyncio.run(go())


def only(ran: Ran) -> Task:
    assert len(ran.finished) == 1
    return ran.finished[0][0]


def expected_usage(times: int) -> Usage:
    return Usage(120 * times, 20 * times, 30 * times, 25 * times)


# ---- retries -------------------------------------------------------------------------------------


def test_server_error_is_retried_and_only_the_answer_is_billed() -> None:
    script = Script(error(500, "boom"), answer("0"))
    ran = dispatch(script, task())
    outcome = only(ran).outcome
    assert (outcome.status, outcome.verdict, outcome.error) == (Status.OK, Verdict(0), None)
    assert (outcome.attempts, outcome.billed_calls) == (2, 1)
    assert outcome.usage == expected_usage(1)
    assert ran.finished[0][1] == "api"
    assert len(script.bodies) == 2 and script.bodies[0] == script.bodies[1]


def test_junk_answers_are_retried_then_invalid_output_with_every_answer_billed() -> None:
    script = Script(answer("I like turtles", usage={"prompt_tokens": 100, "completion_tokens": 10}),
                    answer("still not sure", usage={"prompt_tokens": 100, "completion_tokens": 20}),
                    answer("the weather is nice", usage={"prompt_tokens": 100, "completion_tokens": 40}))
    outcome = only(dispatch(script, task())).outcome
    assert outcome.status is Status.INVALID_OUTPUT and outcome.verdict is None
    assert (outcome.attempts, outcome.billed_calls) == (3, 3)
    assert outcome.raw_output == "the weather is nice"
    assert outcome.error is not None and "not a verdict" in outcome.error
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens) == (300, 70)
    assert outcome.cost_usd == pytest.approx((300 * 0.075 + 70 * 0.30) / 1e6)


def test_cut_off_answer_is_retried_with_a_doubled_cap_up_to_the_limit_then_truncated() -> None:
    script = Script(answer("", finish="length"))
    outcome = only(dispatch(script, task(max_tokens=100))).outcome
    assert [b["max_tokens"] for b in script.bodies] == [100, 200, 300]
    assert outcome.status is Status.TRUNCATED
    assert (outcome.attempts, outcome.billed_calls) == (3, 3)
    assert outcome.error == "output cap of 300 tokens reached before an answer"
    assert outcome.finish_reason == "length" and outcome.raw_output is None
    assert outcome.usage == expected_usage(3)


def test_cut_off_answer_then_verdict_at_the_bigger_cap_is_ok() -> None:
    script = Script(answer(None, finish="length"), answer("0"))
    outcome = only(dispatch(script, task())).outcome
    assert [b["max_tokens"] for b in script.bodies] == [100, 200]
    assert (outcome.status, outcome.verdict, outcome.error) == (Status.OK, Verdict(0), None)


def test_transport_errors_until_attempts_run_out_fail_the_row() -> None:
    script = Script(TransportError("server closed the connection"))
    outcome = only(dispatch(script, task())).outcome
    assert outcome.status is Status.FAILED
    assert outcome.attempts == 3 and len(script.bodies) == 3
    assert outcome.error == "server closed the connection (after 3 attempts)"
    assert (outcome.billed_calls, outcome.cost_usd, outcome.verdict) == (0, 0.0, None)


def test_refusals_are_waited_for_longer_than_failures() -> None:
    script = Script(*[error(429, "busy")] * 4, answer("1"))
    outcome = only(dispatch(script, task())).outcome
    assert (outcome.status, outcome.attempts) == (Status.OK, 5)  # more than max_attempts = 3


def test_refusals_past_their_budget_fail_the_row() -> None:
    script = Script(error(503, "overloaded"))
    outcome = only(dispatch(script, task())).outcome
    assert outcome.status is Status.FAILED
    assert outcome.error == "HTTP 503: overloaded (after 6 attempts)"


def test_a_row_waiting_for_retry_after_does_not_hold_up_the_others() -> None:
    calls: list[str] = []

    class FirstSlowIsRefused(Script):
        async def __call__(self, body: bytes) -> HttpReply:
            user = orjson.loads(body)["messages"][1]["content"]
            calls.append(user)
            if user == "slow" and calls.count("slow") == 1:
                return error(429, "later", headers={"Retry-After": "0.2"})
            return answer("1")

    ran = dispatch(FirstSlowIsRefused(), task("slow"), task("a"), task("b"))
    assert [t.user for t, _ in ran.finished] == ["a", "b", "slow"]
    assert calls == ["slow", "a", "b", "slow"]
    assert ran.control.limits.paused_until == float("-inf")  # one 429 pauses nobody else
    assert only_status(ran, "slow") == (Status.OK, 2)


def only_status(ran: Ran, user: str) -> tuple[Status, int]:
    outcome = next(t.outcome for t, _ in ran.finished if t.user == user)
    return outcome.status, outcome.attempts


@pytest.mark.parametrize("status", [400, 413, 422])
def test_row_error_is_rejected_after_one_attempt(status: int) -> None:
    script = Script(error(status, "content too large"), answer("1"))
    outcome = only(dispatch(script, task())).outcome
    assert outcome.status is Status.REJECTED
    assert (outcome.attempts, outcome.billed_calls, outcome.cost_usd) == (1, 0, 0.0)
    assert outcome.error == f"HTTP {status}: content too large"
    assert len(script.bodies) == 1


# ---- stopping ------------------------------------------------------------------------------------


def test_fatal_answer_stops_the_run_and_the_rest_are_unsent() -> None:
    script = Script(error(401, "bad key sk-x-0123456789"))
    ran = dispatch(script, task("a"), task("b"), task("c"))
    assert ran.stops == [(Status.ABORTED, "HTTP 401: bad key [redacted]")]
    statuses = {t.user: (t.outcome.status, source) for t, source in ran.finished}
    assert statuses["a"] == (Status.ABORTED, "api")
    assert statuses["b"] == statuses["c"] == (Status.ABORTED, "none")
    assert len(script.bodies) == 1


def test_budget_too_small_for_one_attempt_stops_with_budget_exhausted() -> None:
    budget = Budget(1e-9)
    ran = dispatch(Script(answer("1")), task("a"), task("b"), budget=budget)
    assert ran.stops[0] == (Status.BUDGET_EXHAUSTED, None)
    assert {t.outcome.status for t, _ in ran.finished} == {Status.BUDGET_EXHAUSTED}
    assert {source for _, source in ran.finished} == {"none"}


def test_budget_is_settled_to_what_was_charged() -> None:
    budget = Budget(1.0)
    ran = dispatch(Script(answer("1")), task("a"), task("b"), budget=budget)
    assert [t.outcome.status for t, _ in ran.finished] == [Status.OK, Status.OK]
    assert (budget.expected, budget.worst, budget.in_flight) == (pytest.approx(0.0), pytest.approx(0.0), 0)
    assert budget.spent == pytest.approx(2 * PRICING.cost(expected_usage(1)))


def test_a_bug_fails_the_row_loudly_and_the_worker_goes_on() -> None:
    class Broken(Script):
        async def __call__(self, body: bytes) -> HttpReply:
            if orjson.loads(body)["messages"][1]["content"] == "boom":
                raise KeyError("bug")
            return answer("0")

    ran = dispatch(Broken(), task("boom"), task("fine"))
    statuses = {t.user: t.outcome for t, _ in ran.finished}
    assert statuses["boom"].status is Status.FAILED
    assert statuses["boom"].error == "internal error: KeyError: 'bug'"
    assert statuses["fine"].status is Status.OK
    assert ran.dispatcher.internal_errors == 1
    assert "KeyError" in (ran.dispatcher.first_traceback or "")  # the caller shows it


# ---- what an answer cost -------------------------------------------------------------------------


def test_charged_usd_prefers_the_hosts_own_figure() -> None:
    assert charged_usd(Usage(server_cost_usd=0.5), 0.1) == 0.5
    assert charged_usd(Usage(), 0.1) == 0.1
    assert charged_usd(None, 0.1) == 0.1


# ---- a throttle other than RateControl -----------------------------------------------------------


def test_a_worker_on_leased_capacity_sends_and_reports_its_attempts_to_the_shared_limiter() -> None:
    from pipeline.engines.ray.leases import Grant, LeaseRequest, SharedLimiter
    from pipeline.engines.ray.throttle import LeasedThrottle

    limiter = SharedLimiter(rpm=None, tpm=None)

    async def lease(request: LeaseRequest) -> Grant:
        return limiter.lease(request, now=0.0)

    throttle = LeasedThrottle(lease, chunk=1)
    ran = dispatch(Script(error(429, "slow down", {"Retry-After": "0"}), answer("1")), task(),
                   control=throttle)  # type: ignore[arg-type]
    assert only(ran).outcome.status is Status.OK
    assert (limiter.calls, limiter.granted) == (2, 2)  # one request per lease: chunk = 1
    assert limiter.control.refused == 1  # the 429 went back with the second lease call


def test_a_billed_answer_with_no_text_to_read_is_retried_to_a_failed_label_and_every_try_is_counted(
        tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"buy now {i}"} for i in range(20)])
    config = make_config(tmp_path, [rows], policies=["spam"], max_attempts=3)
    result = run_pipeline(config, SimulatorConfig(faults=Faults(odd_content=1.0)))
    labels = result.labels()
    assert labels["status"].unique().to_list() == ["failed"] and labels["attempts"].unique().to_list() == [3]
    assert labels["billed_calls"].unique().to_list() == [3]
    assert labels["error"].str.contains("implausible answer: content is a").all()
    assert result.report()["requests"] == result.stats.billed == 60


def test_a_verdict_with_an_odd_detail_is_labelled_once_with_the_detail_noted(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"buy now {i}"} for i in range(40)])
    config = make_config(tmp_path, [rows], policies=["spam"])
    result = run_pipeline(config, SimulatorConfig(faults=Faults(odd_details=1.0)))
    labels = result.labels()
    assert labels["status"].unique().to_list() == ["ok"] and labels["violation"].unique().to_list() == [1]
    assert labels["attempts"].unique().to_list() == [1] and result.stats.billed == 40
    assert labels["error"].str.starts_with("odd details from the host: ").all()
    report = result.report()
    assert (report["requests"], report["cached_prompt_tokens"], report["reasoning_tokens"]) == (
        40, result.stats.cached_tokens, result.stats.reasoning_tokens)


@pytest.mark.slow
def test_hung_requests_stop_counting_against_the_pool_and_every_row_is_still_labelled_once(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": f"comment {i}"} for i in range(400)]
    config = make_config(tmp_path, [write_jsonl(tmp_path / "in.jsonl", rows)], policies=["spam"], concurrency=4,
                         request_timeout=1.0, stragglers=6)
    sim = SimulatorConfig(latency_ms=3, faults=Faults(hang=0.03, hang_seconds=1.5), seed=5)
    result = run_pipeline(config, sim)
    assert result.code == 0, result.stderr
    labels = result.labels()
    assert labels.height == 400 and labels["id"].n_unique() == 400 and set(labels["status"]) == {"ok"}
    # hung requests kept their connections while others took their place, never more than the cap beside the pool
    assert 4 < result.stats.max_in_flight <= 4 + 6


@pytest.mark.slow
def test_with_stragglers_off_the_pool_never_grows(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": f"comment {i}"} for i in range(200)]
    config = make_config(tmp_path, [write_jsonl(tmp_path / "in.jsonl", rows)], policies=["spam"], concurrency=4,
                         request_timeout=1.0, stragglers=0)
    sim = SimulatorConfig(latency_ms=3, faults=Faults(hang=0.03, hang_seconds=1.5), seed=5)
    result = run_pipeline(config, sim)
    assert result.code == 0, result.stderr
    assert result.stats.max_in_flight <= 4
