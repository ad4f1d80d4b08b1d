"""Settings and counters of the built-in simulator."""

from __future__ import annotations

from dataclasses import dataclass, field

#: faults of the transport or the host: no answer from the model, never billed.
TRANSIENT_FAULTS = ("error_5xx", "html_error", "reset", "hang", "truncated_body", "non_json")
#: faults of the model itself: a full, billed answer that is not a verdict.
MODEL_FAULTS = ("junk_output", "refusal", "length_empty")
ALL_FAULTS = TRANSIENT_FAULTS + MODEL_FAULTS

RETRY_AFTER_STYLES = ("seconds", "http-date", "ms", "none")
REASONING_FIELDS = ("reasoning", "reasoning_content")
DEFAULT_MODELS = ("gpt-oss-safeguard-20b-simulator", "gpt-oss-safeguard-120b-simulator")


@dataclass(slots=True)
class Faults:
    """Probability (0..1) of each fault, drawn once per request.

    >>> Faults.transient(0.06).reset
    0.01
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
    hang_seconds: float = 30.0

    @classmethod
    def transient(cls, rate: float) -> Faults:
        """Spread ``rate`` evenly over every transient fault kind."""
        share = rate / len(TRANSIENT_FAULTS)
        return cls(**dict.fromkeys(TRANSIENT_FAULTS, share))


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
    #: bearer key every request must carry; None = any key (or none) accepted.
    api_key: str | None = None
    #: answer every request with 402, as OpenRouter does when credit runs out.
    out_of_credit: bool = False
    reasoning_field: str = "reasoning"
    #: include ``usage`` in answers (the model's answers are counted as billed either way).
    include_usage: bool = True
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError on settings the server cannot honour."""
        if self.retry_after not in RETRY_AFTER_STYLES:
            raise ValueError(f"retry_after must be one of {RETRY_AFTER_STYLES}, got {self.retry_after!r}")
        if self.reasoning_field not in REASONING_FIELDS:
            raise ValueError(f"reasoning_field must be one of {REASONING_FIELDS}")
        if not self.models or not all("simulator" in name for name in self.models):
            raise ValueError("the simulator serves one or more model names, each containing 'simulator'")
        for name in ALL_FAULTS:
            p = getattr(self.faults, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault probability {name}={p} is not within 0..1")


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
    rate_limited: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    max_in_flight: int = 0
