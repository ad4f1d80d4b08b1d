"""Settings and counters of the built-in simulator."""

from __future__ import annotations

from dataclasses import dataclass, field

#: faults of the transport or the host: no answer from the model, never billed.
TRANSIENT_FAULTS = ("error_5xx", "html_error", "reset", "hang", "truncated_body", "non_json")
#: faults of the model itself: a full, billed answer that is not a verdict.
MODEL_FAULTS = ("junk_output", "refusal", "length_empty")
#: what busy hosts and odd OpenAI-compatible servers send (not part of ``Faults.transient``).
HOST_FAULTS = ("rate_limited", "error_503_html", "content_parts", "malformed_fields", "choice_error",
               "content_filter", "odd_details", "odd_content",
               "endless_body")
ALL_FAULTS = TRANSIENT_FAULTS + MODEL_FAULTS + HOST_FAULTS
#: faults after which the model's answer is billed (the rest are never billed).
BILLED_FAULTS = frozenset({*MODEL_FAULTS, "content_parts", "malformed_fields", "content_filter", "odd_details",
                           "odd_content"})

PROFILES = ("openai", "modelslab", "openrouter", "groq", "vllm")
RETRY_AFTER_STYLES = ("seconds", "http-date", "ms", "none")
REASONING_FIELDS = ("reasoning", "reasoning_content")
TOKEN_COUNTERS = ("approx", "o200k")
DEFAULT_MODELS = ("gpt-oss-safeguard-20b-simulator", "gpt-oss-safeguard-120b-simulator")
MODELSLAB_MODEL_ID = "openai-gpt-oss-safeguard-20b"

#: issue 8's "20 % of attempts failing in eight ways".
EIGHT_WAY_MIX = {
    "rate_limited": 0.05, "error_5xx": 0.03, "error_503_html": 0.02, "reset": 0.02, "truncated_body": 0.02,
    "junk_output": 0.03, "length_empty": 0.02, "hang": 0.01,
}


@dataclass(slots=True)
class Faults:
    """Probability (0..1) of each fault, drawn once per request.

    >>> Faults.transient(0.06).reset
    0.01
    >>> round(Faults.mix(**EIGHT_WAY_MIX).total(), 2)
    0.2
    """

    error_5xx: float = 0.0  # 500/502/503/504 with a JSON error
    html_error: float = 0.0  # 502 with an HTML page, as a proxy would send
    reset: float = 0.0  # connection closed without any response
    hang: float = 0.0  # no answer for ``hang_seconds`` (longer than a client timeout)
    truncated_body: float = 0.0  # 200, half of the JSON body, then the connection closes
    non_json: float = 0.0  # 200 with a plain-text body
    junk_output: float = 0.0  # billed answer that is not a verdict
    refusal: float = 0.0  # billed "I'm sorry, but I can't help with that."
    length_empty: float = 0.0  # billed, finish_reason "length", empty content
    rate_limited: float = 0.0  # 429 with Retry-After: 1 whatever the limits (a busy upstream)
    error_503_html: float = 0.0  # 503 with an HTML page
    content_parts: float = 0.0  # billed, message.content as [{"type": "text", "text": ...}]
    malformed_fields: float = 0.0  # billed 200 with a non-string model/finish_reason or absurd usage
    choice_error: float = 0.0  # 200, a choice with finish_reason "error" and an error object (OpenRouter)
    content_filter: float = 0.0  # billed, finish_reason "content_filter" and empty content (OpenRouter)
    #: billed verdict with one impossible detail: reasoning_tokens < 0 or > completion_tokens, cached_tokens >
    #: prompt_tokens, a non-string model or finish_reason (half of them as content parts)
    odd_details: float = 0.0
    odd_content: float = 0.0  # billed 200 whose message.content is a number or an object
    endless_body: float = 0.0  # 200, chunked, a body that never ends (cut after ``hang_seconds``), never billed
    hang_seconds: float = 30.0

    @classmethod
    def transient(cls, rate: float) -> Faults:
        """Spread ``rate`` evenly over every transient fault kind."""
        share = rate / len(TRANSIENT_FAULTS)
        return cls(**dict.fromkeys(TRANSIENT_FAULTS, share))

    @classmethod
    def mix(cls, *, hang_seconds: float = 30.0, **probabilities: float) -> Faults:
        """Faults from ``kind=probability`` pairs, e.g. ``Faults.mix(**EIGHT_WAY_MIX)``; raises on a
        kind that does not exist or a total above 1."""
        unknown = set(probabilities) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_FAULTS)}")
        faults = cls(**probabilities, hang_seconds=hang_seconds)
        if faults.total() > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities add up to {faults.total():g}, more than 1")
        return faults

    def total(self) -> float:
        """Probability that a request meets any fault."""
        return sum(getattr(self, kind) for kind in ALL_FAULTS)


@dataclass(slots=True)
class SimulatorConfig:
    """What the simulator serves and how badly it behaves. Mutable while it runs."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    #: requests / tokens per minute the server accepts; None = unlimited.
    rpm: float | None = None
    tpm: float | None = None
    #: send x-ratelimit-* headers on every response (else the limit is hidden).
    advertise_limits: bool = False
    #: how a 429 says when to come back: "seconds", "http-date", "ms" (retry-after-ms) or "none".
    retry_after: str = "seconds"
    faults: Faults = field(default_factory=Faults)
    #: key every request must carry; None = any key (or none) accepted.
    api_key: str | None = None
    #: repeat ``api_key`` in every reply, in every encoded form (pipeline.simulator.echo): a leaky host.
    echo_key: bool = False
    #: answer every request with 402 (OpenRouter) or "out of credit" (ModelsLab).
    out_of_credit: bool = False
    reasoning_field: str = "reasoning"
    #: include ``usage`` in answers (the model's answers are counted as billed either way).
    include_usage: bool = True
    #: completion tokens billed on every answer beyond what it wrote and past ``max_tokens``: a host whose
    #: reasoning is not held to the output cap (0 = every bill within the cap)
    bills_past_max_tokens: int = 0
    seed: int = 0
    #: which host's wire shapes to speak: openai, modelslab, openrouter, groq, vllm.
    profile: str = "openai"
    #: how prompt and completion tokens are counted: "approx" (4 bytes a token) or "o200k" (Harmony).
    count_tokens: str = "approx"
    #: "Current date" in the Harmony system message (o200k counting); None = today (UTC).
    current_date: str | None = None
    #: answer every request 429 with ``Retry-After`` of this many seconds and
    #: ``x-ratelimit-remaining-requests: 0`` but no reset (a quota spent until a time not said); None = off.
    quota_storm: float | None = None
    #: (phrase, answer when it violates, answer when not): a policy containing the phrase is answered in
    #: its own format ("{rule}": the keyword rule's id, "{keyword}": the phrase matched); first match wins
    answer_templates: list[tuple[str, str, str]] = field(default_factory=list)
    # -- modelslab ------------------------------------------------------------------------------
    #: the model id ModelsLab serves (its body field ``model_id``).
    model_id: str = MODELSLAB_MODEL_ID
    #: concurrent requests the account may have queued (ModelsLab plans: 5, 10, 15).
    queue: int = 5
    #: ``retry_after`` (seconds) in the body of a full-queue 429.
    queue_retry_after: float = 1.0
    #: probability of a ``{"status": "processing", "fetch_result": ...}`` reply.
    processing: float = 0.0
    #: seconds until a processing reply's result can be fetched.
    processing_eta: float = 0.2
    # -- openrouter -----------------------------------------------------------------------------
    #: USD per million tokens, for OpenRouter's ``usage.cost``.
    input_price: float = 0.075
    cached_input_price: float = 0.0375
    output_price: float = 0.30
    #: name in the response's ``provider`` field.
    provider_name: str = "Simulator"
    #: in-flight requests over this answer 402 with Retry-After (OpenRouter's in-flight budget).
    in_flight_budget: int | None = None
    # -- groq, openrouter -----------------------------------------------------------------------
    #: requests per day: Groq's x-ratelimit-limit-requests (None = 1,000,000 advertised); OpenRouter's
    #: daily cap on free models (None = no cap), 429 until midnight UTC once spent.
    rpd: float | None = None
    # -- vllm -----------------------------------------------------------------------------------
    #: requests the engine runs at once; the rest wait (vLLM's --max-num-seqs).
    max_num_seqs: int = 256

    def validate(self) -> None:
        """Raise ValueError on settings the server cannot honour."""
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.retry_after not in RETRY_AFTER_STYLES:
            raise ValueError(f"retry_after must be one of {RETRY_AFTER_STYLES}, got {self.retry_after!r}")
        if self.reasoning_field not in REASONING_FIELDS:
            raise ValueError(f"reasoning_field must be one of {REASONING_FIELDS}")
        if self.count_tokens not in TOKEN_COUNTERS:
            raise ValueError(f"count_tokens must be one of {TOKEN_COUNTERS}, got {self.count_tokens!r}")
        if not self.models or not all("simulator" in name for name in self.models):
            raise ValueError("the simulator serves one or more model names, each containing 'simulator'")
        probabilities = {name: getattr(self.faults, name) for name in ALL_FAULTS}
        for name, p in {**probabilities, "processing": self.processing}.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault probability {name}={p} is not within 0..1")
        if self.bills_past_max_tokens < 0:
            raise ValueError(f"bills_past_max_tokens must be 0 or more, got {self.bills_past_max_tokens}")
        if self.echo_key and not self.api_key:
            raise ValueError("echo_key repeats the key the simulator requires: set api_key too")
        if self.quota_storm is not None and not self.quota_storm >= 1:
            raise ValueError(f"quota_storm must be at least 1 second, got {self.quota_storm}")
        if any(len(t) != 3 or not t[0] for t in self.answer_templates):
            raise ValueError("each answer template is (phrase of the policy, answer if it violates, answer if not)")
        if self.queue < 1 or self.max_num_seqs < 1:
            raise ValueError("queue and max_num_seqs must be at least 1")
        if self.profile == "vllm" and (self.rpm is not None or self.tpm is not None):
            raise ValueError("vLLM never answers 429: limit it with max_num_seqs, not rpm/tpm")

    def served(self) -> list[str]:
        """Model names a request may ask for."""
        return [self.model_id] if self.profile == "modelslab" else self.models


@dataclass(slots=True)
class SimulatorStats:
    """Live counters. Token sums cover billed answers only."""

    #: chat-completion requests received (model listing and /_simulator/* not counted).
    requests: int = 0
    #: answers the model produced (success and model faults): what a real host would charge.
    billed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    #: HTTP status sent → count (a reset sends none; a truncated body counts as its 200).
    status_counts: dict[int, int] = field(default_factory=dict)
    #: 429s for the configured rpm/tpm/rpd limits (not the ``rate_limited`` fault).
    rate_limited: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    max_in_flight: int = 0
    #: ModelsLab: requests refused because the account queue was full.
    queue_rejections: int = 0
    #: ModelsLab: "processing" replies sent, and fetches of their results.
    processing_replies: int = 0
    fetches: int = 0
    #: OpenRouter: choice-level errors and content-filter answers served.
    choice_errors: int = 0
    content_filtered: int = 0
    #: OpenRouter: 402s for the in-flight budget (with Retry-After).
    budget_refusals: int = 0
    #: junk or refusal faults that structured output (response_format json_schema) turned into verdicts
    constrained: int = 0
    #: the first distinct system messages received (at most 16), as they arrived
    system_messages: list[str] = field(default_factory=list)
    #: vLLM: GET /metrics served, and the most requests ever waiting for an engine slot.
    metrics_scrapes: int = 0
    max_waiting: int = 0
