"""One request's way through the simulator, without IO: check it, bill it, fault it, shape it.

``Host.admit`` checks a request and reserves its rate-limit share (a refusal or a ``Ticket``);
``Host.draw_fault`` picks the fault; ``Host.reply`` builds the answer in the profile's shapes.
The HTTP server and the offline batch mode both drive these three steps.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

import orjson

from pipeline.simulator import harmony, rules
from pipeline.simulator.config import ALL_FAULTS, SimulatorConfig, SimulatorStats
from pipeline.simulator.hosts import Reply, host_for
from pipeline.simulator.hosts.base import HTML_502, HTML_503, Usage
from pipeline.simulator.hosts.groq import Groq
from pipeline.simulator.hosts.openrouter import choice_error
from pipeline.simulator.limits import RateLimits
from pipeline.simulator.protocol import EFFORTS, effort, split_messages

_PROMPT_CACHE = 256  # distinct system messages remembered (prefix cache, parsed topic)


@dataclasses.dataclass(slots=True)
class _Prompt:
    """What the simulator derives once per distinct system message."""

    fmt: str
    keywords: tuple[tuple[str, str], ...]
    tokens: int
    warm: bool = False  # seen in an answered request: its prefix is cached now
    #: the policy's own answer format (violates, safe), from the simulator's answer templates
    template: tuple[str, str] | None = None


@dataclasses.dataclass(slots=True)
class Ticket:
    """An admitted request: its verdict and token counts, before any fault."""

    body: dict[str, Any]
    model: Any
    prompt: _Prompt
    answer: str
    reasoning: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    max_tokens: int | None


def _structured(body: dict[str, Any]) -> bool:
    """The request asks for the answer's JSON schema (``response_format`` json_schema)."""
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") == "json_schema"


class Host:
    """The simulated host's state: prompt cache, rate limits, fault draws, counters."""

    def __init__(self, config: SimulatorConfig, stats: SimulatorStats) -> None:
        self.config = config
        self.stats = stats
        self.shape = host_for(config.profile)
        self._prompts: dict[tuple[str, str], _Prompt] = {}
        self._limits = RateLimits()
        self._next_id = 0
        self._fault_rng = random.Random(config.seed)

    def forget(self) -> None:
        """Forget the prefix cache."""
        self._prompts.clear()

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def count_status(self, status: int) -> None:
        self.stats.status_counts[status] = self.stats.status_counts.get(status, 0) + 1

    def count_fault(self, kind: str) -> None:
        self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1

    # -- admission ------------------------------------------------------------------------------

    def admit(self, raw: bytes, authorization: str | None) -> Reply | Ticket:
        """A refusal, or the request's ticket (its rate-limit share already taken)."""
        cfg, shape = self.config, self.shape
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return shape.bad_request("request body is not valid JSON")
        if not isinstance(body, dict):
            return shape.bad_request("request body must be a JSON object")
        if cfg.api_key is not None and not shape.authorised(authorization, body, cfg.api_key):
            return shape.bad_key()
        model = shape.model(body)
        served = cfg.served()
        if model not in served:
            return shape.unknown_model(model, served)
        if cfg.out_of_credit:
            return shape.no_credit()
        split = split_messages(body.get("messages"))
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if split is None or not (max_tokens is None or (type(max_tokens) is int and max_tokens > 0)):
            return shape.bad_request("messages or max_tokens malformed")
        level = effort(body)
        if level not in EFFORTS:
            return shape.bad_request("reasoning effort must be low|medium|high")
        refusal = shape.check(body)
        if refusal is not None:
            return refusal
        system, user = split
        seen = self.stats.system_messages
        if len(seen) < 16 and system not in seen:
            seen.append(system)
        prompt = self._prompt(system, level or "medium")
        decision = rules.decide(prompt.keywords, user)
        if prompt.template is not None:
            answer = rules.render_template(prompt.template, decision)
        else:
            answer = rules.render_answer(prompt.fmt, decision)
        reasoning = rules.render_reasoning(decision)
        if cfg.count_tokens == "o200k":
            reasoning_tokens = harmony.o200k_cached(reasoning)
            completion = harmony.o200k_cached(answer) + reasoning_tokens
            prompt_tokens = prompt.tokens + harmony.o200k(user) + 1 + harmony.o200k_cached("assistant")
        else:
            reasoning_tokens = rules.count_tokens(reasoning)
            completion = rules.count_tokens(answer) + reasoning_tokens
            prompt_tokens = rules.prompt_tokens(prompt.tokens, user)
        refusal = self._limit(prompt_tokens, completion, prompt)
        if refusal is not None:
            return refusal
        if "[[reject]]" in user:
            return shape.error(400, "invalid_request_error", "content rejected", "content_rejected")
        return Ticket(body, model, prompt, answer, reasoning, prompt_tokens, completion, reasoning_tokens,
                      max_tokens)

    def _limit(self, prompt_tokens: int, completion: int, prompt: _Prompt) -> Reply | None:
        cfg = self.config
        if cfg.quota_storm is not None:
            self.stats.rate_limited += 1
            return self.shape.quota_spent(cfg.quota_storm)
        if isinstance(self.shape, Groq):
            cached = self._cached(prompt) if prompt.warm else 0
            wait = self.shape.take(cfg, prompt_tokens - cached + completion)
        else:
            wait = self._limits.take(cfg.rpm, cfg.tpm, prompt_tokens + completion)
        refusal = self.shape.limited(cfg, wait) if wait > 0 else self.shape.daily_cap(cfg)
        if refusal is not None:
            self.stats.rate_limited += 1
        return refusal

    def limit_headers(self) -> dict[str, str]:
        """The configured x-ratelimit-* headers, if advertised (Groq sends its own always)."""
        cfg = self.config
        if isinstance(self.shape, Groq):
            return self.shape.headers(cfg, None)
        if cfg.advertise_limits and (cfg.rpm is not None or cfg.tpm is not None):
            return self._limits.headers(cfg.rpm, cfg.tpm)
        return {}

    def _prompt(self, system: str, level: str) -> _Prompt:
        o200k = self.config.count_tokens == "o200k"
        key = (system, level if o200k else "")
        prompt = self._prompts.get(key)
        if prompt is None:
            if len(self._prompts) >= _PROMPT_CACHE:
                del self._prompts[next(iter(self._prompts))]
            if o200k:
                tokens = harmony.prefix_tokens(system, level, self.config.current_date or harmony.today())
            else:
                tokens = rules.message_tokens(system)
            prompt = _Prompt(rules.output_format(system), rules.keywords_for(system), tokens,
                             template=rules.template_for(system, self.config.answer_templates))
            self._prompts[key] = prompt
        return prompt

    def _cached(self, prompt: _Prompt) -> int:
        return rules.cached_tokens(prompt.tokens)

    # -- faults and answers ---------------------------------------------------------------------

    def draw_fault(self) -> str | None:
        """The fault this request meets (counted), or None."""
        faults = self.config.faults
        r = self._fault_rng.random()
        for kind in ALL_FAULTS:
            p = getattr(faults, kind)
            if p:
                if r < p:
                    self.count_fault(kind)
                    return kind
                r -= p
        return None

    def draw(self, probability: float) -> bool:
        """A yes with ``probability`` from the fault stream (only drawn when switched on)."""
        return probability > 0 and self._fault_rng.random() < probability

    def reply(self, ticket: Ticket, fault: str | None) -> Reply:
        """The answer to an admitted request meeting ``fault`` (None = a clean answer)."""
        shape = self.shape
        if fault == "error_5xx":
            return shape.server_error(self._fault_rng.choice((500, 502, 503, 504)))
        if fault == "html_error":
            return Reply(502, HTML_502, "text/html")
        if fault == "error_503_html":
            return Reply(503, HTML_503, "text/html")
        if fault == "non_json":
            return Reply(200, b"upstream busy, please try again later", "text/plain")
        if fault == "reset":
            return Reply(0, b"", action="reset")
        if fault == "rate_limited":
            return shape.busy()
        if fault == "endless_body":
            return Reply(200, b"", action="endless")
        response, usage = self.completion(ticket, fault)
        if fault == "truncated_body":
            return Reply(200, orjson.dumps(response), action="truncate")
        headers = shape.headers(self.config, usage)
        return Reply(200, orjson.dumps(response), headers=headers)

    def completion(self, ticket: Ticket, fault: str | None) -> tuple[dict[str, Any], Usage | None]:
        """The chat.completion body (billed unless the fault says otherwise) and its usage."""
        cfg, shape = self.config, self.shape
        answer, completion, reasoning_tokens = ticket.answer, ticket.completion_tokens, ticket.reasoning_tokens
        finish = "stop"
        if fault in ("junk_output", "refusal") and _structured(ticket.body):
            self.stats.constrained += 1  # decoding held to the verdict's schema: the answer stays a verdict
        elif fault in ("junk_output", "refusal"):
            answer = rules.JUNK_OUTPUT if fault == "junk_output" else rules.REFUSAL
            count = harmony.o200k_cached if cfg.count_tokens == "o200k" else rules.count_tokens
            completion = count(answer) + reasoning_tokens
        if fault == "length_empty" or (ticket.max_tokens is not None and completion > ticket.max_tokens):
            answer, finish = "", "length"
            completion = reasoning_tokens = ticket.max_tokens or 4096
        if fault == "content_filter":
            answer, finish = "", "content_filter"
            completion = reasoning_tokens
            self.stats.content_filtered += 1
        completion += cfg.bills_past_max_tokens  # reasoning the host does not hold to the cap
        reasoning_tokens += cfg.bills_past_max_tokens
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        if shape.shows_reasoning(ticket.body):
            message[cfg.reasoning_field] = ticket.reasoning
        if fault == "content_parts" or (fault == "odd_details" and self._fault_rng.random() < 0.5):
            message["content"] = [{"type": "text", "text": answer}]
        if fault == "odd_content":
            message["content"] = self._fault_rng.choice((7, {"text": answer}))
        response: dict[str, Any] = {
            "id": f"chatcmpl-sim-{self.next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": ticket.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        if fault == "truncated_body":
            return response, None
        shape.decorate(response, cfg)
        if fault == "choice_error":
            choice_error(response["choices"][0])
            self.stats.choice_errors += 1
            return response, None
        prompt = ticket.prompt
        cached = self._cached(prompt) if prompt.warm else 0
        prompt.warm = True
        usage = Usage(ticket.prompt_tokens, completion, cached, reasoning_tokens)
        odd = self._fault_rng.randrange(5) if fault == "odd_details" else None
        if odd is not None and cfg.include_usage:
            usage = self._charged(usage, odd)
        stats = self.stats
        stats.billed += 1
        stats.prompt_tokens += usage.prompt
        stats.completion_tokens += usage.completion
        stats.cached_tokens += usage.cached
        stats.reasoning_tokens += usage.reasoning
        if cfg.include_usage:
            response["usage"] = shape.usage(usage, cfg)
        if fault == "malformed_fields":
            self._malform(response)
        if odd is not None:
            self._odd_detail(response, odd)
        return response, usage

    @staticmethod
    def _charged(usage: Usage, odd: int) -> Usage:
        """What a host charges for an answer whose usage has an impossible detail: the detail counts as 0."""
        if odd == 2:
            return dataclasses.replace(usage, cached=0)
        if odd in (0, 1):
            return dataclasses.replace(usage, reasoning=0)
        return usage

    def _odd_detail(self, response: dict[str, Any], odd: int) -> None:
        """One impossible detail on an otherwise good, billed answer (see `_charged` for its bill)."""
        usage = response.get("usage")
        if odd == 4:
            response["choices"][0]["finish_reason"] = 1
        elif odd == 3 or usage is None:
            response["model"] = ["gpt-oss"]
        elif odd == 2:
            usage["prompt_tokens_details"] = {"cached_tokens": usage["prompt_tokens"] + 64}
        else:
            reasoning = -5 if odd == 0 else usage["completion_tokens"] + 1
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}

    def _malform(self, response: dict[str, Any]) -> None:
        """One of the broken answers odd servers send: a non-string field or implausible usage."""
        usage = response.setdefault("usage", {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        variant = self._fault_rng.randrange(4)
        if variant == 0:
            response["model"] = 12345
        elif variant == 1:
            response["choices"][0]["finish_reason"] = 7
        elif variant == 2:
            usage["prompt_tokens"] = 3e9
            usage["total_tokens"] = 3e9 + usage["completion_tokens"]
        else:
            usage["completion_tokens"] = -usage["completion_tokens"] - 1
