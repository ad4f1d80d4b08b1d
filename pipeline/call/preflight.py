"""`moderate check`: a preflight of a job's endpoint, for first use and for cron.

Same config and flags as `run`. It checks that the endpoint answers, that the key is accepted,
that the model is listed where the host has a model list, and sends one canary request per policy
(so it costs at most one call per policy), parsed into a verdict like any answer of a run. It
prints the rate-limit headers the host sent and a table of results, and exits 0 only when every
check passed: 4 for an endpoint or key problem, 1 for a canary answered without a verdict,
2 for a config or policy mistake (a quota the host reports spent for longer than max_retry_after
is an endpoint problem, as in a run). The key is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

import aiohttp
import orjson

from pipeline.call.answers import describe_error, read_reply
from pipeline.call.client import AiohttpTransport, HttpReply, TransportError
from pipeline.call.parser import InvalidOutput, verdict_reader
from pipeline.call.redact import Redactor
from pipeline.call.vllm_metrics import RUNNING, WAITING, metrics_url, parse_metrics
from pipeline.config.providers import (
    DEFAULT_BASE_URLS,
    HOSTS,
    build_body,
    chat_url,
    models_url,
    request_headers,
    run_model,
)
from pipeline.config.settings import RunConfig
from pipeline.core import exitcodes
from pipeline.core.aio import run_sync
from pipeline.core.records import Policy
from pipeline.plan.policies import PolicyError, builtin_policy_dir, load_policies
from pipeline.plan.prompt import render_system
from pipeline.plan.schemas import response_format
from pipeline.ratecontrol import AttemptKind
from pipeline.ratecontrol.decide import quota_stop_reason, spent_past

#: the text each canary asks about: known to violate the spam policy, harmless for the others.
CANARY = "BUY NOW!!! Click here for FREE money, limited offer: http://win-cash.example/claim"
RATE_LIMIT_PREFIXES = ("x-ratelimit-", "ratelimit-", "retry-after")
_KEY_PROBLEM = {401: "key rejected", 403: "key not allowed to use this model", 402: "out of credit",
                404: "model or URL not found"}


@dataclass(slots=True)
class CheckResult:
    """One row of the table. ``ok`` None is information, not a pass or a failure."""

    name: str
    ok: bool | None
    detail: str
    #: the exit code this failure calls for.
    code: int = exitcodes.EXIT_OK


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The rate-limit headers among a reply's headers, names in lower case.

    >>> rate_limit_headers({"X-RateLimit-Remaining-Requests": "9", "Content-Type": "x"})
    {'x-ratelimit-remaining-requests': '9'}
    """
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(RATE_LIMIT_PREFIXES)}


def exit_code(results: list[CheckResult]) -> int:
    """0 when nothing failed, else the most serious code among the failures (2, then 4, then 1)."""
    codes = {r.code for r in results if r.ok is False}
    for code in (exitcodes.EXIT_USAGE, exitcodes.EXIT_ENDPOINT, exitcodes.EXIT_ROWS_FAILED):
        if code in codes:
            return code
    return exitcodes.EXIT_OK


def format_table(results: list[CheckResult], *, secret: str | None = None) -> str:
    """The results as aligned text lines; ``secret`` is blanked out wherever it appears."""
    width = max([len(r.name) for r in results] + [5])
    lines = [f"  {'CHECK':<{width}}  RESULT  DETAIL"]
    for r in results:
        result = "info" if r.ok is None else "ok" if r.ok else "FAIL"
        lines.append(f"  {r.name:<{width}}  {result:<6}  {r.detail}")
    text = "\n".join(lines)
    return Redactor(secret).text(text)


def run_check(config: RunConfig, *, stream: TextIO | None = None) -> int:
    """Run every check, print the table, return the exit code."""
    return asyncio.run(check_async(config, stream=stream))


def check(config: RunConfig) -> list[CheckResult]:
    """The preflight as data: one `CheckResult` per check (endpoint, key, model, a canary per policy).

    `exit_code(results)` is what ``moderate check`` exits with. Raises `PolicyError` for a bad policy file.
    """
    return run_sync(_check_all(config, stream=None))


async def check_async(config: RunConfig, *, stream: TextIO | None = None) -> int:
    """`run_check` inside a running event loop."""
    stream = stream if stream is not None else sys.stdout
    keys = [os.environ.get(c.api_key_env) or None for c in _each_endpoint(config)]
    try:
        results = await _check_all(config, stream=stream)
    except PolicyError as exc:
        print(f"moderate: error: {exc}", file=sys.stderr)
        return exitcodes.EXIT_USAGE
    code = exit_code(results)
    table = format_table(results, secret=keys[0])
    for key in keys[1:]:
        table = Redactor(key).text(table)
    print(table, file=stream)
    failed = sum(r.ok is False for r in results)
    verdict = "all checks passed" if not failed else f"failed: {failed} of {len(results)} checks"
    print(f"moderate check: {verdict} (exit {code})", file=stream)
    return code


def _each_endpoint(config: RunConfig) -> list[RunConfig]:
    """The run's config as seen by each of its endpoints (itself when it has one)."""
    return [dataclasses.replace(config, provider=spec.provider, base_url=spec.base_url, model=spec.model or "",
                                api_key_env=spec.api_key_env, endpoints=[], source=f"endpoint {spec.name}")
            for spec in config.endpoints] or [config]


async def _check_all(config: RunConfig, *, stream: TextIO | None) -> list[CheckResult]:
    if not config.endpoints:
        return await _check_one(config, stream=stream)
    results = []  # each endpoint's checks, named after it
    for spec, one in zip(config.endpoints, _each_endpoint(config), strict=True):
        for row in await _check_one(one, stream=stream, name=spec.name):
            row.name = f"{spec.name}: {row.name}"
            results.append(row)
    return results


async def _check_one(config: RunConfig, *, stream: TextIO | None, name: str | None = None) -> list[CheckResult]:
    api_key = os.environ.get(config.api_key_env) or None
    policies = load_policies(config.policies or sorted(builtin_policy_dir().glob("*.md")))
    simulated = config.provider == "simulator"
    model = run_model(config.provider, config.model)
    async with contextlib.AsyncExitStack() as stack:
        base_url = config.base_url or DEFAULT_BASE_URLS.get(config.provider, "")
        if simulated:
            from pipeline.simulator import SimulatorConfig, start_simulator

            sim = SimulatorConfig(answer_templates=[(p, v, s) for p, v, s in config.simulator_answer_templates])
            base_url = (await stack.enter_async_context(start_simulator(sim))).base_url
        if stream is not None:
            print(f"moderate check: {f'endpoint {name}: ' if name else ''}{config.provider} at {_shown(base_url)}, "
                  f"model {model}, "
                  f"{len(policies)} policies", file=stream)
        return await _checks(config, policies, base_url=base_url, model=model, api_key=api_key)


async def _checks(config: RunConfig, policies: list[Policy], *, base_url: str, model: str,
                  api_key: str | None) -> list[CheckResult]:
    host = HOSTS[config.provider]
    if host.needs_key and not api_key:
        return [CheckResult("key", False, f"no API key: set the environment variable {config.api_key_env}",
                            exitcodes.EXIT_USAGE)]
    headers = request_headers(config.provider, api_key)
    redactor = Redactor(api_key)  # texts are cut short as they are read: the key goes first
    results: list[CheckResult] = []
    limits: dict[str, str] = {}
    if host.models_endpoint:
        results += await _check_models(models_url(base_url), headers, model, config.request_timeout, limits,
                                       redactor)
        if any(r.ok is False for r in results):
            return [*results, _limits_row(limits)]
    if host.prometheus_metrics:
        results.append(await _check_vllm_metrics(metrics_url(base_url), headers, config.request_timeout))
    canaries: list[CheckResult] = []
    statuses: list[int] = []
    provider = "openai" if config.provider == "simulator" else config.provider
    schema = config.response_format == "json_schema"
    async with AiohttpTransport(url=chat_url(base_url), headers=headers, connections=1) as transport:
        for policy in policies:
            body = orjson.dumps(build_body(
                provider, model=model, system=render_system(policy, config.output_format), user=CANARY,
                reasoning_effort=config.reasoning_effort, max_tokens=config.max_tokens, keep_reasoning=False,
                api_key=api_key, response_format=response_format(config.output_format) if schema else None))
            row, reply = await _canary(transport, policy.name, body, config.request_timeout, limits,
                                       config.max_retry_after, redactor, config)
            canaries.append(row)
            if reply is not None:
                statuses.append(reply.status)
            if row.code == exitcodes.EXIT_ENDPOINT:  # the next policy would meet the same refusal
                break
    if not host.models_endpoint:
        results.append(CheckResult("endpoint", True, "answered the canary") if statuses
                       else CheckResult("endpoint", None, "see the canary below"))
    if not api_key:
        results.append(CheckResult("key", None, f"none sent ({config.api_key_env} is not set)"))
    elif any(r.ok for r in canaries):
        results.append(CheckResult("key", True, "accepted"))
    elif any(status in (401, 403) for status in statuses):
        results.append(CheckResult("key", False, "rejected: see the canary below", exitcodes.EXIT_ENDPOINT))
    else:
        results.append(CheckResult("key", None, "not confirmed: see the canary below"))
    return results + canaries + [_limits_row(limits)]


async def _check_models(url: str, headers: Mapping[str, str], model: str, timeout: float,
                        limits: dict[str, str], redactor: Redactor) -> list[CheckResult]:
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession(headers=dict(headers)) as session, \
                session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            reply = HttpReply(response.status, response.headers, redactor.strings(await response.read()))
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else _describe(exc)
        return [CheckResult("endpoint", False, f"{reason}: is the server running and the base URL right?",
                            exitcodes.EXIT_ENDPOINT)]
    ms = (time.perf_counter() - started) * 1000
    limits.update(rate_limit_headers(reply.headers))
    answered = CheckResult("endpoint", True, f"GET {urlsplit(url).path} answered HTTP {reply.status} in {ms:.0f} ms")
    if reply.status in (401, 403):
        detail = describe_error(reply.status, reply.body)
        return [answered, CheckResult("key", False, f"{_KEY_PROBLEM[reply.status]}: {detail}",
                                      exitcodes.EXIT_ENDPOINT)]
    if reply.status != 200:
        return [answered, CheckResult("model", None, f"no model list ({describe_error(reply.status, reply.body)})")]
    try:
        served = [str(m["id"]) for m in orjson.loads(reply.body)["data"]]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return [answered, CheckResult("model", None, "the model list is not in OpenAI's shape")]
    if model in served:
        return [answered, CheckResult("model", True, f"{model} is listed")]
    shown = ", ".join(served[:5]) + (f" and {len(served) - 5} more" if len(served) > 5 else "")
    return [answered, CheckResult("model", False, f"{model} is not served here (served: {shown or 'none'})",
                                  exitcodes.EXIT_ENDPOINT)]


async def _check_vllm_metrics(url: str, headers: Mapping[str, str], timeout: float) -> CheckResult:
    """vLLM's queue gauges, which the run's backpressure reads (information only)."""
    try:
        async with aiohttp.ClientSession(headers=dict(headers)) as session, \
                session.get(url, timeout=aiohttp.ClientTimeout(total=min(timeout, 5.0))) as response:
            text = await response.text() if response.status == 200 else ""
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        text = ""
    gauges = parse_metrics(text)
    if WAITING not in gauges:
        return CheckResult("vllm metrics", None, f"none at {urlsplit(url).path} (not a vLLM server?)")
    return CheckResult("vllm metrics", None, f"waiting={gauges[WAITING]:g} running={gauges.get(RUNNING, 0):g}")


async def _canary(transport: AiohttpTransport, name: str, body: bytes, timeout: float, limits: dict[str, str],
                  max_retry_after: float, redactor: Redactor,
                  config: RunConfig) -> tuple[CheckResult, HttpReply | None]:
    label = f"canary {name}"
    started = time.perf_counter()
    try:
        reply = await transport.post(body, timeout=timeout)
    except TransportError as exc:
        return CheckResult(label, False, f"{exc}: is the server running and the base URL right?",
                           exitcodes.EXIT_ENDPOINT), None
    seconds = time.perf_counter() - started
    reading = read_reply(reply.status, reply.headers, redactor.strings(reply.body), now=time.time())
    limits.update(rate_limit_headers(reply.headers if reading.headers is None else reading.headers))
    attempt, completion = reading.attempt, reading.completion
    if spent_past(attempt, max_retry_after):  # a run would stop on it at once, as on a bad key
        return CheckResult(label, False, quota_stop_reason(attempt, max_retry_after), exitcodes.EXIT_ENDPOINT), reply
    if attempt.kind is AttemptKind.FATAL:
        cause = _KEY_PROBLEM.get(reply.status)
        detail = f"{cause}: {attempt.error}" if cause else f"the host refused: {attempt.error}"
        return CheckResult(label, False, detail, exitcodes.EXIT_ENDPOINT), reply
    if attempt.kind is not AttemptKind.ANSWER or completion is None:
        return CheckResult(label, False, attempt.error or "no answer", exitcodes.EXIT_ROWS_FAILED), reply
    try:
        read = verdict_reader(config.output_format, config.label_pattern, config.violation_pattern)
        verdict = read(completion.content or "")
    except InvalidOutput as exc:
        cut = " (cut off by max_tokens: raise it)" if completion.finish_reason == "length" else ""
        return CheckResult(label, False, f"no verdict{cut}: {exc}", exitcodes.EXIT_ROWS_FAILED), reply
    usage = completion.usage
    tokens = f", {usage.prompt_tokens}+{usage.completion_tokens} tokens" if usage else ", no usage sent"
    category = f" {verdict.category}" if verdict.category else ""
    return CheckResult(label, True, f"violation={verdict.violation}{category} in {seconds:.1f} s{tokens}"), reply


def _limits_row(limits: dict[str, str]) -> CheckResult:
    if not limits:
        return CheckResult("rate limits", None, "no rate-limit headers sent")
    return CheckResult("rate limits", None, " ".join(f"{k}={v}" for k, v in sorted(limits.items())))


def _shown(url: str) -> str:
    """A URL without any user:password part."""
    parts = urlsplit(url)
    return url.replace(parts.netloc, parts.netloc.rsplit("@", 1)[-1], 1) if "@" in parts.netloc else url


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    return f"{type(exc).__name__}: {exc}".split("\n")[0][:200]
