"""The workers: take a task, send one attempt, carry out what `decide` says, take the next.

A task that must wait (Retry-After, backoff, a queued answer) goes back to the queue with a time
(`WorkQueue.defer`) and its worker moves on: waiting never holds a connection slot. A bug met
while handling one row ends that row ``failed`` with the bug named, and the run goes on to the
end and exits 70: a worker never dies silently.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.call.judge import account
from pipeline.call.router import Route, Router
from pipeline.core.cost import Pricing
from pipeline.core.records import Outcome, Status, Usage
from pipeline.engines.local.workqueue import WorkQueue
from pipeline.plan.planner import Task
from pipeline.ratecontrol import Accept, AttemptKind, GiveUp, Poll, Retry, RetryRules, StopRun, Throttle, decide
from pipeline.ratecontrol.budget import Budget
from pipeline.ratecontrol.decide import BILLED

__all__ = ["Dispatcher", "charged_usd"]

#: seconds before a task that found the budget held by queued answers asks again
RESERVE_AGAIN_S = 0.05


def charged_usd(usage: Usage | None, list_price_usd: float) -> float:
    """What an answer cost: the host's own figure when it reports one (OpenRouter), else list price."""
    if usage is not None and usage.server_cost_usd is not None:
        return usage.server_cost_usd
    return list_price_usd


#: attempts that show the host alive: billed, refused (busy) or rejected for this row only
_ALIVE = BILLED | {AttemptKind.REFUSED, AttemptKind.QUEUED, AttemptKind.ROW_ERROR}


@dataclass(slots=True)
class Dispatcher:
    queue: WorkQueue[Task]
    #: the run's endpoints, each with its judge and throttle (RateControl in one process; capacity leased
    #: from a shared limiter on a cluster)
    router: Router
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
    #: copies the run's stop status so a worker sees it between two steps
    stop_status: Status | None = None
    #: set while any budget reservation is released (waiters re-check)
    released: asyncio.Event | None = None
    #: set when the run stops sending (a signal, a fatal error): ends waits for a turn at once
    stopping: asyncio.Event | None = None
    rng: random.Random | None = None
    #: starts one more worker (a request turned straggler and stopped counting against the pool)
    spawn: Callable[[], None] | None = None
    #: stragglers that ended since a worker took their place: as many workers stop after their row
    retire_owed: int = 0
    #: budget reservations held by answers waiting in the queue to be fetched
    held_for_queued: int = 0
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
                self._release(task)
                task.outcome.status = Status.INTERRUPTED
                task.outcome.error = "stopped before the answer came"
                self.finish(task, "api" if task.outcome.attempts else "none")
                raise
            except Exception as exc:  # a bug: this row fails loudly, the worker lives on
                self._bug(task, exc)
            finally:
                queue.task_done()
            await self.pace()
            if self.retire_owed:  # a straggler ended: one worker more than the pool, since one took its place
                self.retire_owed -= 1
                return

    @property
    def control(self) -> Throttle:
        """The first endpoint's throttle (the only one with a single endpoint)."""
        return self.router.routes[0].control

    def release_stragglers(self, now: float) -> int:
        """Requests in flight past their endpoint's straggler threshold stop counting against its pool:
        a worker starts in the place of each. Returns how many were released."""
        released = 0
        if self.spawn is None:  # nobody to take their place
            return released
        for route in self.router.routes:
            watch = route.watch
            if watch is None or not watch.cap:
                continue
            for _ in watch.due(now):
                released += 1
                self.router.give_back(route)
                self.spawn()
        return released

    async def _step(self, task: Task) -> None:
        retry = task.retry
        # an answer the host is preparing was paid for when it was asked: a budget stop still fetches it
        if self.stop_status is not None and not (retry.poll_url and self.stop_status is Status.BUDGET_EXHAUSTED):
            return self._end_stopped(task)
        expected = worst = 0.0
        budgeted = self.budget.cap is not None
        if budgeted and task.reserved is not None:  # a queued answer keeps the reservation that asked for it
            expected, worst = task.reserved
        elif budgeted:
            reserved = await self._reserve(task)
            if reserved is None:  # room is held by answers the host is preparing: fetch those first
                self.queue.defer(task, RESERVE_AGAIN_S)
                return None
            if reserved is False:
                self.stop(Status.BUDGET_EXHAUSTED, None)
                return self._end_stopped(task)
            expected, worst = reserved
        router, outcome = self.router, task.outcome
        route = await self._route(task)
        if route is None:  # the run stopped while this request waited for a connection: it was not sent
            if budgeted:
                self._settle(expected, worst, 0.0)
            return self._end_stopped(task)
        control = route.control
        tokens = 0
        if retry.poll_url is None:
            taken = await control.acquire(task.prompt_tokens, stop=self.stopping)
            if taken is None:  # the run stopped while this request waited for its turn: it was not sent
                router.give_back(route)
                if budgeted:
                    self._settle(expected, worst, 0.0)
                return self._end_stopped(task)
            tokens = taken
        plan = task.slot.plan
        gate, watch = route.gate, route.watch
        if gate is not None:
            await gate.wait_for_slot()
        ticket = watch.start(time.monotonic()) if watch is not None else 0
        try:
            result = await route.judge.attempt(system=plan.system, system_tokens=plan.system_tokens, user=task.user,
                                               max_tokens=retry.max_tokens, poll_url=retry.poll_url)
        finally:
            if gate is not None:
                gate.release()
            straggled = watch is not None and watch.end(ticket)
            if straggled:
                self.retire_owed += 1
            else:
                router.give_back(route)
        attempt = result.attempt
        if watch is not None and result.latency_ms and not straggled:
            watch.note_answer(result.latency_ms / 1000.0, time.monotonic())
        usage = result.usage
        used = 0
        if usage is not None:
            used = usage.prompt_tokens + usage.completion_tokens
            if not route.cached_count_toward_tpm:
                used -= usage.cached_prompt_tokens
        control.after_attempt(attempt, headers=result.headers, reserved=tokens, used=used,
                              completion_tokens=usage.completion_tokens if usage else None)
        before = outcome.cost_usd
        account(outcome, result, route.pricing, keep_reasoning=self.keep_reasoning)
        outcome.endpoint = route.name
        action = decide(attempt, retry, self.rules, rand=(self.rng or random).random(),
                        streak=route.long_refusals, now=time.monotonic())
        if attempt.kind in _ALIVE:
            router.answered(route)
        else:
            router.failed(route, attempt.error)
        if isinstance(action, StopRun) and not router.single and router.retire(route, action.reason):
            action = Retry(0.0)  # the endpoint is out: another takes the request
        if budgeted:
            if usage is not None:
                self.budget.billed_completion(usage.completion_tokens)
            charged = charged_usd(usage, outcome.cost_usd - before)
            if isinstance(action, Poll):  # the answer is still to come: its reservation stays held
                self._hold(task, expected, worst)
                self.budget.charge(charged)
                if self.released is not None:
                    self.released.set()  # waiters re-check: this room is now held by a queued answer
            else:
                self._unhold(task)
                self._settle(expected, worst, charged)
        self._carry_out(task, action, control)
        return None

    async def _route(self, task: Task) -> Route | None:
        """The endpoint for this attempt: the one preparing a queued answer, else one with a free connection
        (another than the last one's when a request is retried)."""
        router = self.router
        if task.retry.poll_url is not None and not router.single:
            for route in router.routes:
                if route.name == task.outcome.endpoint:
                    route.busy += 1
                    return route
        route = router.pick(task.outcome.endpoint)
        if route is None:
            route = await router.take(task.outcome.endpoint, stop=self.stopping)
        return route

    def _settle(self, expected: float, worst: float, charged: float) -> None:
        self.budget.settle(expected, worst, charged)
        if self.released is not None:
            self.released.set()

    def _hold(self, task: Task, expected: float, worst: float) -> None:
        if task.reserved is None:
            self.held_for_queued += 1
        task.reserved = (expected, worst)

    def _unhold(self, task: Task) -> tuple[float, float] | None:
        held, task.reserved = task.reserved, None
        if held is not None:
            self.held_for_queued -= 1
        return held

    def _release(self, task: Task) -> None:
        """A row ends while the host still prepares its answer: give its reservation back."""
        held = self._unhold(task)
        if held is not None:
            self._settle(*held, 0.0)

    def _carry_out(self, task: Task, action: object, control: Throttle) -> None:
        outcome = task.outcome
        if isinstance(action, Accept):  # the error column keeps a note of details dropped from the answer
            outcome.status = Status.OK
            self.finish(task, "api")
        elif isinstance(action, Retry):
            task.retry.poll_url = None
            control.note_retry(action.after, outcome.error)
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

    async def _reserve(self, task: Task) -> tuple[float, float] | bool | None:
        """Reserve budget for one attempt, waiting while attempts being sent may free some: the (expected,
        worst) costs reserved, or False when the budget is spent.

        None when only answers waiting in the queue to be fetched hold the room: the caller must
        not wait here, or no worker would be left to fetch them.
        """
        while True:
            # priced again after each wait: an answer that came back meanwhile may show the host bills more
            expected, worst = self._costs(task)
            if self.budget.reserve(expected, worst):
                return expected, worst
            if self.budget.exhausted or self.stop_status is not None or self.released is None:
                return False
            if self.budget.in_flight <= self.held_for_queued:
                return None
            self.released.clear()
            await self.released.wait()

    def _costs(self, task: Task) -> tuple[float, float]:
        """An attempt's expected cost (the output measured so far) and its worst (the most the host bills)."""
        estimate, prompt = self.pricing.estimate, task.prompt_tokens
        expected = estimate(prompt_tokens=prompt, completion_tokens=int(self.control.mean_completion))
        worst = estimate(prompt_tokens=prompt, completion_tokens=self.budget.worst_completion(task.retry.max_tokens))
        return expected, worst

    def _end_stopped(self, task: Task) -> None:
        """The run stopped before a usable answer: the row is unsent (what was billed still counts)."""
        self._release(task)
        outcome = task.outcome
        last = f" (last: {outcome.error})" if outcome.error else ""
        outcome.status = self.stop_status or Status.INTERRUPTED
        outcome.error = f"the run stopped before a usable answer{last}"
        outcome.verdict = None
        self.finish(task, "api" if outcome.attempts else "none")

    def _bug(self, task: Task, exc: Exception) -> None:
        self._release(task)
        self.internal_errors += 1
        description = f"internal error: {type(exc).__name__}: {exc}"
        if self.first_internal_error is None:
            self.first_internal_error = description
            self.first_traceback = "".join(traceback.format_exception(exc))
        outcome: Outcome = task.outcome
        outcome.status, outcome.error, outcome.verdict = Status.FAILED, description[:300], None
        self.finish(task, "api" if outcome.attempts else "none")
