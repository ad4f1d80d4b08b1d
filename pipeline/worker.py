"""The workers: take a task, send one attempt, carry out what `decide` says, take the next.

A task that must wait (Retry-After, backoff, a queued answer) goes back to the queue with a time
(`WorkQueue.defer`) and its worker moves on: waiting never holds a connection slot. A bug met
while handling one row ends that row ``failed`` with the bug named, and the run goes on to the
end and exits 70: a worker never dies silently.
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.budget import Budget
from pipeline.cost import Pricing
from pipeline.endpoints import Gate
from pipeline.judge import Judge, account
from pipeline.planner import Task
from pipeline.ratecontrol import Accept, GiveUp, Poll, Retry, RetryRules, StopRun, Throttle, decide
from pipeline.records import Outcome, Status, Usage
from pipeline.workqueue import WorkQueue

__all__ = ["Dispatcher", "charged_usd"]


def charged_usd(usage: Usage | None, list_price_usd: float) -> float:
    """What an answer cost: the host's own figure when it reports one (OpenRouter), else list price."""
    if usage is not None and usage.server_cost_usd is not None:
        return usage.server_cost_usd
    return list_price_usd


@dataclass(slots=True)
class Dispatcher:
    queue: WorkQueue[Task]
    judge: Judge
    #: RateControl in one process; capacity leased from a shared limiter on a cluster
    control: Throttle
    rules: RetryRules
    budget: Budget
    pricing: Pricing
    keep_reasoning: bool
    #: a task's row is done (source "api" when it was sent, "none" when not)
    finish: Callable[[Task, str], None]
    #: awaited after each finished row (store backpressure)
    pace: Callable[[], Awaitable[None]]
    #: the run must stop sending (budget, fatal endpoint error)
    stop: Callable[[Status, str | None], None]
    #: admission beyond our own limits (vLLM's waiting queue), or None
    gate: Gate | None = None
    #: prompt tokens served from cache count toward the host's TPM (not on Groq)
    cached_count_toward_tpm: bool = True
    #: copies the run's stop status so a worker sees it between two steps
    stop_status: Status | None = None
    #: set while any budget reservation is released (waiters re-check)
    released: asyncio.Event | None = None
    rng: random.Random | None = None
    internal_errors: int = 0
    first_internal_error: str | None = None
    #: the first bug's traceback, for the caller to show
    first_traceback: str | None = None

    async def work(self) -> None:
        queue = self.queue
        while (task := await queue.get()) is not None:
            try:
                await self._step(task)
            except asyncio.CancelledError:  # the grace period after a signal ran out
                task.outcome.status = Status.INTERRUPTED
                task.outcome.error = "stopped before the answer came"
                self.finish(task, "api" if task.outcome.attempts else "none")
                raise
            except Exception as exc:  # a bug: this row fails loudly, the worker lives on
                self._bug(task, exc)
            finally:
                queue.task_done()
            await self.pace()

    async def _step(self, task: Task) -> None:
        if self.stop_status is not None:
            return self._end_stopped(task)
        retry = task.retry
        expected = worst = 0.0
        budgeted = self.budget.cap is not None and retry.poll_url is None
        if budgeted:
            estimate = self.pricing.estimate
            expected = estimate(prompt_tokens=task.prompt_tokens, completion_tokens=int(self.control.mean_completion))
            worst = estimate(prompt_tokens=task.prompt_tokens, completion_tokens=retry.max_tokens)
            if not await self._reserve(expected, worst):
                self.stop(Status.BUDGET_EXHAUSTED, None)
                return self._end_stopped(task)
        tokens = 0
        if retry.poll_url is None:
            tokens = await self.control.acquire(task.prompt_tokens)
        plan = task.slot.plan
        gate = self.gate
        if gate is not None:
            await gate.wait_for_slot()
        try:
            result = await self.judge.attempt(system=plan.system, system_tokens=plan.system_tokens, user=task.user,
                                              max_tokens=retry.max_tokens, poll_url=retry.poll_url)
        finally:
            if gate is not None:
                gate.release()
        usage = result.usage
        used = 0
        if usage is not None:
            used = usage.prompt_tokens + usage.completion_tokens
            if not self.cached_count_toward_tpm:
                used -= usage.cached_prompt_tokens
        self.control.after_attempt(result.attempt, headers=result.headers, reserved=tokens, used=used,
                                   completion_tokens=usage.completion_tokens if usage else None)
        outcome = task.outcome
        before = outcome.cost_usd
        account(outcome, result, self.pricing, keep_reasoning=self.keep_reasoning)
        if budgeted:
            self.budget.settle(expected, worst, charged_usd(usage, outcome.cost_usd - before))
            if self.released is not None:
                self.released.set()
        self._carry_out(task, decide(result.attempt, retry, self.rules, rand=(self.rng or random).random()))

    def _carry_out(self, task: Task, action: object) -> None:
        outcome = task.outcome
        if isinstance(action, Accept):
            outcome.status, outcome.error = Status.OK, None
            self.finish(task, "api")
        elif isinstance(action, Retry):
            task.retry.poll_url = None
            self.queue.defer(task, action.after)
        elif isinstance(action, Poll):
            self.queue.defer(task, action.after)
        elif isinstance(action, GiveUp):
            outcome.status, outcome.error, outcome.verdict = action.status, action.error, None
            self.finish(task, "api")
        elif isinstance(action, StopRun):
            self.stop(Status.ABORTED, action.reason)
            outcome.status, outcome.error, outcome.verdict = Status.ABORTED, action.reason, None
            self.finish(task, "api")
        else:  # pragma: no cover - decide returns one of the above
            raise TypeError(f"unknown action {action!r}")

    async def _reserve(self, expected: float, worst: float) -> bool:
        """Reserve budget for one attempt, waiting while attempts in flight may free some."""
        while not self.budget.reserve(expected, worst):
            if self.budget.exhausted or self.stop_status is not None or self.released is None:
                return False
            self.released.clear()
            await self.released.wait()
        return True

    def _end_stopped(self, task: Task) -> None:
        """The run stopped before a usable answer: the row is unsent (what was billed still counts)."""
        outcome = task.outcome
        last = f" (last: {outcome.error})" if outcome.error else ""
        outcome.status = self.stop_status or Status.INTERRUPTED
        outcome.error = f"the run stopped before a usable answer{last}"
        outcome.verdict = None
        self.finish(task, "api" if outcome.attempts else "none")

    def _bug(self, task: Task, exc: Exception) -> None:
        self.internal_errors += 1
        description = f"internal error: {type(exc).__name__}: {exc}"
        if self.first_internal_error is None:
            self.first_internal_error = description
            self.first_traceback = "".join(traceback.format_exception(exc))
        outcome: Outcome = task.outcome
        outcome.status, outcome.error, outcome.verdict = Status.FAILED, description[:300], None
        self.finish(task, "api" if outcome.attempts else "none")
