"""Run configuration: `RunConfig`, every config key (``SCHEMA``) and the [[endpoints]] entries.

Reading a file and laying flags over it is `pipeline.config.load`; checking the values is
`pipeline.config.rules`.

Paths in a config file are relative to the current directory, exactly like flags.

Every key of a config file is listed in ``SCHEMA``; an unknown key or a wrong type is a one-line
`ConfigError` naming the file and the key. Command-line flags override the file. The value rules
(ranges, choices, provider presets) live in `pipeline.config.rules`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pipeline.config.providers import HOSTS
from pipeline.core.records import OutputFormat

#: keys of one ``[[endpoints]]`` entry -> (field of `EndpointSpec`, accepted python types)
ENDPOINT_KEYS: dict[str, tuple[str, tuple[type, ...]]] = {
    "name": ("name", (str,)),
    "provider": ("provider", (str,)),
    "base_url": ("base_url", (str,)),
    "model": ("model", (str,)),
    "api_key_env": ("api_key_env", (str,)),
    "rpm": ("rpm", (int, float)),
    "tpm": ("tpm", (int, float)),
    "concurrency": ("concurrency", (int,)),
    "queue": ("queue", (int,)),
    "weight": ("weight", (int, float)),
    "input_per_million": ("input_per_million", (int, float)),
    "cached_input_per_million": ("cached_input_per_million", (int, float)),
    "output_per_million": ("output_per_million", (int, float)),
}
#: ``[endpoint]`` and ``[limits]`` keys that say where requests go: per endpoint once ``[[endpoints]]`` is used.
PER_ENDPOINT = ("provider", "base_url", "model", "api_key_env", "concurrency", "queue", "rpm", "tpm")


@dataclass(slots=True)
class EndpointSpec:
    """One host of a run with several (``[[endpoints]]``); unset fields take the provider's preset."""

    name: str = ""
    provider: str = "openai"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "MODERATION_API_KEY"
    rpm: float | None = None
    tpm: float | None = None
    concurrency: int | None = None
    queue: int | None = None
    #: routing preference: a higher weight is tried first (then self-hosted, then the cheaper)
    weight: float = 1.0
    input_per_million: float | None = None
    cached_input_per_million: float | None = None
    output_per_million: float | None = None


#: fields whose default depends on the provider (`pipeline.config.providers.HOSTS`) until a file or flag sets them.
PRESET_FIELDS = ("model", "concurrency")
#: ``drift_threshold = "off"``: violation rates are not compared and drift never changes the exit code
DRIFT_OFF = "off"


@dataclass(slots=True)
class RunConfig:
    """Everything one `moderate run` needs; ``SCHEMA`` maps each config key to its field."""

    # [input]
    inputs: list[str] = field(default_factory=list)
    id_column: str | None = None
    text_column: str = "text"
    limit: int | None = None
    #: input columns carried into the label shards (gold labels, metadata, partition values)
    keep_columns: list[str] = field(default_factory=list)
    #: label a uniform random sample: a row count (>= 1) or a fraction (< 1) of the input; None = every row
    sample: float | None = None
    seed: int = 0
    # [policies]
    policies: list[str] = field(default_factory=list)
    output_format: OutputFormat = OutputFormat.RATIONALE
    #: output_format "policy": the answer's label is the first match (its one group, if any) ...
    label_pattern: str | None = None
    #: ... and a label matching this pattern whole is a violation
    violation_pattern: str | None = None
    # [endpoint]
    provider: str = "openai"
    base_url: str | None = None
    model: str = HOSTS["openai"].model  # the provider's model id unless set
    api_key_env: str = "MODERATION_API_KEY"
    reasoning_effort: str = "low"
    max_tokens: int = 8192
    max_tokens_cap: int = 32768
    context_tokens: int = 131072
    request_timeout: float = 120.0
    max_attempts: int = 6
    #: refusals (429, 503, a full queue) a request may meet; they cost nothing and do not count above
    max_refusals: int = 30
    #: the longest wait a host may order (Retry-After and the like); longer requests are cut to it
    max_retry_after: float = 600.0
    invalid_output_retries: int = 2
    keep_reasoning: bool = False
    too_long: str = "skip"  # "skip" (status too_long) or "truncate"
    response_format: str = "text"  # "json_schema": ask the host for answers matching the verdict schema
    # [limits]
    concurrency: int = HOSTS["openai"].concurrency  # the provider's default (or `queue`) unless set
    queue: int | None = None  # the host's concurrent-request queue (ModelsLab: 5, 10 or 15 by plan)
    rpm: float | None = None
    tpm: float | None = None
    adaptive: bool = True
    #: against vLLM, read its /metrics and hold its waiting queue near a target
    vllm_backpressure: bool = True
    max_cost: float | None = None
    #: requests past a multiple of the recent answered latency that stop counting against the pool; None =
    #: eight per connection (none for a host with a queue), 0 = off
    stragglers: int | None = None
    #: [[endpoints]]: several hosts in one run; empty = the one [endpoint]
    endpoints: list[EndpointSpec] = field(default_factory=list)
    # [output]
    out: str = "out/run"
    store: str | None = None
    shard_rows: int = 10000
    force: bool = False
    grace_seconds: float = 30.0
    # [storage] object stores (s3://, gs://, abfs://) for inputs and outputs
    storage_endpoint_url: str | None = None
    storage_timeout: float = 30.0
    storage_lock: bool = True
    log_format: str = "text"  # "json": one JSON object per event on stderr
    log_interval: float = 60.0  # seconds between two progress lines (off a terminal) or JSON progress events
    # [quality]
    canaries: str | None = None  # file of texts with known verdicts per policy, sent with every run
    drift_threshold: float | str = 0.05  # a violation rate this far (absolute) from earlier runs' is flagged; "off"
    drift_runs: int = 7  # earlier runs the rate is compared with
    # [pricing] per million tokens; None = from the built-in table (configs/pricing.toml) for provider + model
    input_per_million: float | None = None
    cached_input_per_million: float | None = None
    output_per_million: float | None = None
    gpu_hour_usd: float | None = None  # self-hosted: what the GPUs cost per hour of the run's wall time
    # [alerts] when a run ends with any exit code but 0
    alert_webhook: str | None = None  # POST a JSON summary here (Slack/Teams-compatible "text"); may hold a token
    alert_command: str | None = None  # run this command with the same JSON summary on stdin
    # [simulator] only for provider = "simulator": the built-in simulator is started in-process
    simulator_latency_ms: float = 5.0
    simulator_jitter_ms: float = 5.0
    simulator_fault_rate: float = 0.0
    #: [phrase found in a policy, answer when it violates, answer when not]: the simulator answers that
    #: policy in its own format ("{rule}" is the keyword rule's id)
    simulator_answer_templates: list[list[str]] = field(default_factory=list)
    # where the config came from (for messages), not a key
    source: str = "<flags>"
    #: PRESET_FIELDS still holding a provider default (not set by a file or flag), not a key
    preset: set[str] = field(default_factory=set, compare=False, repr=False)

    def __post_init__(self) -> None:
        defaults = RunConfig.__dataclass_fields__
        self.preset = {name for name in PRESET_FIELDS if getattr(self, name) == defaults[name].default}
        host = HOSTS.get(self.provider)
        if host is not None:  # RunConfig(provider="modelslab") gets that host's model id and concurrency at once
            if "model" in self.preset:
                self.model = host.model
            if "concurrency" in self.preset:
                self.concurrency = self.queue or host.concurrency


# section -> key -> (field name, accepted python types); docs/config.md describes each key
SCHEMA: dict[str, dict[str, tuple[str, tuple[type, ...]]]] = {
    "input": {
        "paths": ("inputs", (list,)),
        "id_column": ("id_column", (str,)),
        "text_column": ("text_column", (str,)),
        "limit": ("limit", (int,)),
        "keep_columns": ("keep_columns", (list,)),
        "sample": ("sample", (int, float)),
        "seed": ("seed", (int,)),
    },
    "policies": {
        "files": ("policies", (list,)),
        "output_format": ("output_format", (str,)),
        "label_pattern": ("label_pattern", (str,)),
        "violation_pattern": ("violation_pattern", (str,)),
    },
    "endpoint": {
        "provider": ("provider", (str,)),
        "base_url": ("base_url", (str,)),
        "model": ("model", (str,)),
        "api_key_env": ("api_key_env", (str,)),
        "reasoning_effort": ("reasoning_effort", (str,)),
        "max_tokens": ("max_tokens", (int,)),
        "max_tokens_cap": ("max_tokens_cap", (int,)),
        "context_tokens": ("context_tokens", (int,)),
        "request_timeout": ("request_timeout", (int, float)),
        "max_attempts": ("max_attempts", (int,)),
        "max_refusals": ("max_refusals", (int,)),
        "max_retry_after": ("max_retry_after", (int, float)),
        "invalid_output_retries": ("invalid_output_retries", (int,)),
        "keep_reasoning": ("keep_reasoning", (bool,)),
        "too_long": ("too_long", (str,)),
        "response_format": ("response_format", (str,)),
    },
    "limits": {
        "concurrency": ("concurrency", (int,)),
        "queue": ("queue", (int,)),
        "rpm": ("rpm", (int, float)),
        "tpm": ("tpm", (int, float)),
        "adaptive": ("adaptive", (bool,)),
        "vllm_backpressure": ("vllm_backpressure", (bool,)),
        "max_cost": ("max_cost", (int, float)),
        "stragglers": ("stragglers", (int,)),
    },
    "output": {
        "dir": ("out", (str,)),
        "store": ("store", (str,)),
        "shard_rows": ("shard_rows", (int,)),
        "grace_seconds": ("grace_seconds", (int, float)),
        "log_format": ("log_format", (str,)),
        "log_interval": ("log_interval", (int, float)),
    },
    "quality": {
        "canaries": ("canaries", (str,)),
        "drift_threshold": ("drift_threshold", (int, float, str)),
        "drift_runs": ("drift_runs", (int,)),
    },
    "alerts": {
        "webhook_url": ("alert_webhook", (str,)),
        "command": ("alert_command", (str,)),
    },
    "storage": {
        "endpoint_url": ("storage_endpoint_url", (str,)),
        "timeout": ("storage_timeout", (int, float)),
        "lock": ("storage_lock", (bool,)),
    },
    "pricing": {
        "input_per_million": ("input_per_million", (int, float)),
        "cached_input_per_million": ("cached_input_per_million", (int, float)),
        "output_per_million": ("output_per_million", (int, float)),
        "gpu_hour_usd": ("gpu_hour_usd", (int, float)),
    },
    "simulator": {
        "latency_ms": ("simulator_latency_ms", (int, float)),
        "jitter_ms": ("simulator_jitter_ms", (int, float)),
        "fault_rate": ("simulator_fault_rate", (int, float)),
        "answer_templates": ("simulator_answer_templates", (list,)),
    },
}

def run_secrets(config: RunConfig) -> list[str]:
    """Every API key the config's endpoints read from the environment: what logs and alerts must not show."""
    names = dict.fromkeys([config.api_key_env, *(spec.api_key_env for spec in config.endpoints)])
    return [value for name in names if (value := os.environ.get(name))]
