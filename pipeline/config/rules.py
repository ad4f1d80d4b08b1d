"""The rules a run configuration must satisfy, whether it came from a file or from flags.

Each rule raises a one-line `ConfigError` naming the config's source and the dotted key
(``'limits.concurrency'``), so a user can find the line to fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.config.providers import HOSTS, RESPONSE_FORMATS, base_url_problem, model_family
from pipeline.core.errors import UserError
from pipeline.core.records import OutputFormat
from pipeline.core.tokens import MESSAGE_OVERHEAD

if TYPE_CHECKING:
    from pipeline.config.settings import RunConfig

PROVIDERS = tuple(HOSTS)
EFFORTS = ("low", "medium", "high")
#: a shard's labels are held in memory until the shard is written
MAX_SHARD_ROWS = 10_000_000
#: one worker and one connection each; far past what one process or one host serves
MAX_CONCURRENCY = 100_000


class ConfigError(UserError):
    """A user mistake in a config file or flag; the message is one line."""


def validate(config: RunConfig) -> None:
    """Value checks shared by files and flags; raises ConfigError naming the key."""
    where = config.source
    try:
        config.output_format = OutputFormat(config.output_format)
    except ValueError:
        choices = ", ".join(f.value for f in OutputFormat)
        raise ConfigError(f"{where}: 'policies.output_format' must be one of {choices}") from None
    _check_patterns(config)
    if config.provider not in PROVIDERS:
        raise ConfigError(f"{where}: 'endpoint.provider' must be one of {', '.join(PROVIDERS)}")
    if config.reasoning_effort not in EFFORTS:
        raise ConfigError(f"{where}: 'endpoint.reasoning_effort' must be one of {', '.join(EFFORTS)}")
    if config.too_long not in ("skip", "truncate"):
        raise ConfigError(f"{where}: 'endpoint.too_long' must be 'skip' or 'truncate'")
    _check_endpoints(config)
    _check_endpoint(config)
    positive = {
        "limits.concurrency": config.concurrency,
        "endpoint.max_tokens": config.max_tokens,
        "endpoint.max_attempts": config.max_attempts,
        "endpoint.max_refusals": config.max_refusals,
        "endpoint.request_timeout": config.request_timeout,
        "endpoint.context_tokens": config.context_tokens,
        "output.shard_rows": config.shard_rows,
        "storage.timeout": config.storage_timeout,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{where}: '{key}' must be greater than 0")
    for key, value in {"limits.rpm": config.rpm, "limits.tpm": config.tpm, "input.limit": config.limit,
                       "limits.max_cost": config.max_cost}.items():
        if value is not None and value < 0:
            raise ConfigError(f"{where}: '{key}' must not be negative")
    if config.invalid_output_retries < 0:
        raise ConfigError(f"{where}: 'endpoint.invalid_output_retries' must not be negative")
    numbers = {
        "endpoint.request_timeout": config.request_timeout, "limits.rpm": config.rpm, "limits.tpm": config.tpm,
        "endpoint.max_retry_after": config.max_retry_after, "limits.max_cost": config.max_cost,
        "output.grace_seconds": config.grace_seconds,
        "pricing.input_per_million": config.input_per_million,
        "pricing.cached_input_per_million": config.cached_input_per_million,
        "pricing.output_per_million": config.output_per_million,
        "simulator.latency_ms": config.simulator_latency_ms, "simulator.jitter_ms": config.simulator_jitter_ms,
    }
    for key, value in numbers.items():  # TOML allows inf and nan
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{where}: '{key}' must be a finite number, not negative")
    _check_nightly(config)
    _check_names_and_sizes(config)
    if config.stragglers is not None and not 0 <= config.stragglers <= MAX_CONCURRENCY:
        raise ConfigError(f"{where}: 'limits.stragglers' must be within 0..{MAX_CONCURRENCY:,} (0 = off)")
    if not 0.0 <= config.simulator_fault_rate <= 1.0:
        raise ConfigError(f"{where}: 'simulator.fault_rate' must be within 0..1")
    for entry in config.simulator_answer_templates:
        if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(v, str) for v in entry)
                and entry[0].strip()):
            raise ConfigError(f"{where}: 'simulator.answer_templates' holds {entry!r}: each entry is "
                              "[\"phrase of the policy\", \"answer when it violates\", \"answer when not\"]")
    config.max_tokens_cap = max(config.max_tokens_cap, config.max_tokens)


def _check_patterns(config: RunConfig) -> None:
    """``output_format = "policy"`` needs both patterns, each a valid regex with at most one group.

    With another format they are not read, but still checked: a config that switches formats by flag
    keeps working, and a broken pattern is found before it is needed."""
    where = config.source
    patterns = {"policies.label_pattern": config.label_pattern,
                "policies.violation_pattern": config.violation_pattern}
    policy = config.output_format is OutputFormat.POLICY
    for key, value in patterns.items():
        flag = "--" + key.split(".")[1].replace("_", "-")
        if value is None or not value.strip():
            if not policy:  # read only with the policy's own format
                continue
            raise ConfigError(f"{where}: output_format = \"policy\" needs '{key}' ({flag} RE)")
        try:
            compiled = re.compile(value)
        except (re.error, RecursionError, OverflowError) as exc:
            raise ConfigError(f"{where}: '{key}' {value!r} is not a valid regular expression ({exc})") from None
        if compiled.groups > 1:
            raise ConfigError(f"{where}: '{key}' {value!r} has {compiled.groups} groups: use one (the label) "
                              "or none, and (?:...) for the others")
        if _nested_repeat(value):
            raise ConfigError(f"{where}: '{key}' {value!r} repeats a repeat (like (a+)+): an answer that does "
                              "not match would take hours to read; use a possessive ++ or *+ inside")
    if policy and config.response_format == "json_schema":
        raise ConfigError(f"{where}: 'endpoint.response_format' = \"json_schema\" constrains answers to our JSON "
                          "verdict: it cannot be used with output_format = \"policy\"")


def _nested_repeat(pattern: str) -> bool:
    """Whether ``pattern`` repeats a part that itself repeats a variable number of times (``(a+)+``,
    ``(\\w*\\s?)*``): the shape whose backtracking grows exponentially with the answer's length."""
    from re import _constants as sre  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    def walk(items: Any, repeated: bool) -> bool:
        for op, arg in items:
            if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
                low, high, body = arg
                if (repeated and high > 1 and high != low) or walk(body, repeated or high > 1):
                    return True
                continue
            # possessive repeats and atomic groups give nothing back: no backtracking into them
            inner = ([arg[-1]] if op is sre.SUBPATTERN else arg[1] if op is sre.BRANCH
                     else [arg[1]] if op in (sre.ASSERT, sre.ASSERT_NOT) else [])
            if any(walk(body, repeated) for body in inner):
                return True
        return False

    return walk(_parser.parse(pattern), False)


def _check_nightly(config: RunConfig) -> None:
    """Kept columns, sampling, log format, quality guards and the GPU price."""
    where = config.source
    if any(not name or name != name.strip() for name in config.keep_columns):
        raise ConfigError(f"{where}: 'input.keep_columns' holds an empty or padded column name")
    if len(set(config.keep_columns)) != len(config.keep_columns):
        raise ConfigError(f"{where}: 'input.keep_columns' names a column twice")
    if config.sample is not None and not (math.isfinite(config.sample) and config.sample > 0
                                          and (config.sample < 1 or float(config.sample).is_integer())):
        raise ConfigError(f"{where}: 'input.sample' must be a row count (1, 2, ...) or a fraction "
                          "between 0 and 1")
    if config.log_format not in ("text", "json"):
        raise ConfigError(f"{where}: 'output.log_format' must be 'text' or 'json'")
    if isinstance(config.drift_threshold, str) and config.drift_threshold != "off":
        raise ConfigError(f"{where}: 'quality.drift_threshold' must be a number within (0, 1] or \"off\", "
                          f"not {config.drift_threshold!r}")
    drift = None if config.drift_threshold == "off" else config.drift_threshold
    for key, value in {"output.log_interval": config.log_interval, "quality.drift_threshold": drift,
                       "pricing.gpu_hour_usd": config.gpu_hour_usd}.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{where}: '{key}' must be a finite number greater than 0")
    if config.drift_runs < 1:
        raise ConfigError(f"{where}: 'quality.drift_runs' must be at least 1")
    # the URL itself is never repeated: it may hold a token
    if config.alert_webhook is not None and not config.alert_webhook.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: 'alerts.webhook_url' must be an http:// or https:// URL")
    if config.alert_command is not None and not config.alert_command.strip():
        raise ConfigError(f"{where}: 'alerts.command' must not be empty")


def _check_names_and_sizes(config: RunConfig) -> None:
    """Names that cannot be empty, sizes with an upper end, and shares within (0, 1]."""
    where = config.source
    names = {"endpoint.model": config.model, "endpoint.api_key_env": config.api_key_env,
             "input.text_column": config.text_column, "input.id_column": config.id_column, "output.dir": config.out}
    for key, value in names.items():
        if value is not None and not value.strip():
            raise ConfigError(f"{where}: '{key}' must not be empty")
    if config.shard_rows > MAX_SHARD_ROWS:
        raise ConfigError(f"{where}: 'output.shard_rows' = {config.shard_rows} is over {MAX_SHARD_ROWS:,} (a shard's "
                          "labels are held in memory until it is written)")
    for key, value in {"limits.queue": config.queue, "limits.concurrency": config.concurrency}.items():
        if value is not None and value > MAX_CONCURRENCY:
            raise ConfigError(f"{where}: '{key}' = {value} is over {MAX_CONCURRENCY:,}")
    if config.drift_threshold != "off" and config.drift_threshold > 1:  # type: ignore[operator]
        raise ConfigError(f"{where}: 'quality.drift_threshold' = {config.drift_threshold:g} is a share of the "
                          "labels: it must be within (0, 1], e.g. 0.05")
    if not math.isfinite(config.storage_timeout):
        raise ConfigError(f"{where}: 'storage.timeout' must be a finite number greater than 0")


def _check_endpoint(config: RunConfig) -> None:
    """Provider presets, base URL, queue and structured output."""
    where, host = config.source, HOSTS[config.provider]
    if config.queue is not None and config.queue <= 0:
        raise ConfigError(f"{where}: 'limits.queue' must be greater than 0 (ModelsLab plans: 5, 10 or 15)")
    # a field still holding some host's default follows the provider; a value set since (in Python) is kept
    if "model" in config.preset and config.model in {h.model for h in HOSTS.values()}:
        config.model = host.model
    if "concurrency" in config.preset and config.concurrency in {h.concurrency for h in HOSTS.values()}:
        config.concurrency = config.queue or host.concurrency
    if config.base_url is not None:
        problem = base_url_problem(config.base_url)
        if problem:
            raise ConfigError(f"{where}: 'endpoint.base_url' {problem}")
    if config.response_format not in RESPONSE_FORMATS:
        raise ConfigError(f"{where}: 'endpoint.response_format' must be one of {', '.join(RESPONSE_FORMATS)}")
    if config.response_format == "json_schema" and not host.json_schema:
        raise ConfigError(f"{where}: 'endpoint.response_format' = \"json_schema\" is not supported by "
                          f"provider {config.provider}; use \"text\"")


def check_context_room(config: RunConfig, system_tokens: Mapping[str, int]) -> None:
    """Refuse a job where some policy leaves no room for the text (before any call is made).

    ``system_tokens`` maps each policy's name to the tokens of its rendered system message. With
    ``context_tokens - policy - max_tokens <= 0`` every text would be too_long, or sent empty
    with ``too_long = "truncate"``.
    """
    for name, tokens in system_tokens.items():
        if config.context_tokens - tokens - config.max_tokens - 4 * MESSAGE_OVERHEAD <= 0:
            raise ConfigError(
                f"{config.source}: policy '{name}' ({tokens} tokens) and 'endpoint.max_tokens' "
                f"({config.max_tokens}) leave no room for the text in 'endpoint.context_tokens' "
                f"({config.context_tokens}): raise context_tokens (and the server's context) or lower max_tokens")


def _check_endpoints(config: RunConfig) -> None:
    """``[[endpoints]]``: each entry's values and presets, one model for all; the first entry stands for
    the run where one provider, model or key is named (pricing table, reports, the cache fingerprint)."""
    specs = config.endpoints
    if not specs:
        return
    where, seen = config.source, set()
    for number, spec in enumerate(specs, 1):
        at = f"{where}: endpoint {number}"
        if not spec.name.strip() or spec.name != spec.name.strip() or not spec.name.isprintable():
            raise ConfigError(f"{at}: 'endpoints.name' must not be empty, padded or hold control characters")
        if spec.name in seen:
            raise ConfigError(f"{at}: 'endpoints.name' = {spec.name!r} is used twice")
        seen.add(spec.name)
        at = f"{where}: endpoint {spec.name!r}"
        if spec.provider not in PROVIDERS:
            raise ConfigError(f"{at}: 'endpoints.provider' must be one of {', '.join(PROVIDERS)}")
        host = HOSTS[spec.provider]
        if spec.base_url is not None and (problem := base_url_problem(spec.base_url)):
            raise ConfigError(f"{at}: 'endpoints.base_url' {problem}")
        for key, value in {"queue": spec.queue, "concurrency": spec.concurrency}.items():
            if value is not None and not 0 < value <= MAX_CONCURRENCY:
                raise ConfigError(f"{at}: 'endpoints.{key}' must be within 1..{MAX_CONCURRENCY:,}")
        numbers = {"rpm": spec.rpm, "tpm": spec.tpm, "input_per_million": spec.input_per_million,
                   "cached_input_per_million": spec.cached_input_per_million,
                   "output_per_million": spec.output_per_million}
        for key, value in numbers.items():
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{at}: 'endpoints.{key}' must be a finite number, not negative")
        if not (math.isfinite(spec.weight) and spec.weight > 0):
            raise ConfigError(f"{at}: 'endpoints.weight' must be a finite number greater than 0")
        if not spec.api_key_env.strip():
            raise ConfigError(f"{at}: 'endpoints.api_key_env' must not be empty")
        spec.model = spec.model or host.model
        if not spec.model.strip():
            raise ConfigError(f"{at}: 'endpoints.model' must not be empty")
        spec.concurrency = spec.concurrency or spec.queue or host.concurrency
    families = {model_family(s.model or "") for s in specs}
    if len(families) > 1:
        named = ", ".join(f"{s.name}: {s.model}" for s in specs)
        raise ConfigError(f"{where}: the endpoints serve different models ({named}); one run labels with one "
                          "model, so that an answer from any of them is the same answer")
    first = specs[0]
    config.provider, config.base_url, config.model = first.provider, first.base_url, first.model or ""
    config.api_key_env = first.api_key_env
    config.concurrency = sum(s.concurrency or 0 for s in specs)
    config.queue, config.rpm, config.tpm = None, None, None
    config.preset.difference_update(("model", "concurrency"))
