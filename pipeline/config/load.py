"""Reading a run configuration: a TOML file into a `RunConfig`, flags laid over it, both checked by
`pipeline.config.rules` (which names the file or flag in a one-line `ConfigError`)."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from pipeline.config.rules import ConfigError, validate
from pipeline.config.settings import ENDPOINT_KEYS, PER_ENDPOINT, SCHEMA, EndpointSpec, RunConfig

_TYPE_NAMES = {list: "a list", str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def load_config(path: str | Path | None) -> RunConfig:
    """Read a TOML config (or defaults when `path` is None) into a validated `RunConfig`.

    >>> load_config(None).concurrency
    64
    """
    config = RunConfig()
    if path is None:
        return config
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    config.source = str(path)
    for section, table in data.items():
        if section == "endpoints":
            config.endpoints = _endpoint_specs(path, table)
            continue
        keys = SCHEMA.get(section)
        if keys is None or not isinstance(table, dict):
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SCHEMA)}, [[endpoints]])")
        for key, value in table.items():
            if key not in keys:
                raise ConfigError(f"{path}: unknown key '{section}.{key}' (known: {', '.join(keys)})")
            name, types = keys[key]
            _check_type(path, f"{section}.{key}", value, types)
            if name in ("inputs", "policies", "keep_columns") and not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: '{section}.{key}' must be a list of strings")
            if "endpoints" in data and name in PER_ENDPOINT:
                raise ConfigError(f"{path}: '{section}.{key}' is set per endpoint when [[endpoints]] is used")
            setattr(config, name, value)
            config.preset.discard(name)
    validate(config)
    return config


def _endpoint_specs(path: Path, entries: object) -> list[EndpointSpec]:
    """``[[endpoints]]`` entries, each key checked like any other."""
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: 'endpoints' must be one or more [[endpoints]] tables")
    specs = []
    for number, entry in enumerate(entries, 1):
        spec = EndpointSpec(name=f"endpoint-{number}")
        for key, value in entry.items():
            if key not in ENDPOINT_KEYS:
                raise ConfigError(f"{path}: unknown key 'endpoints.{key}' in endpoint {number} "
                                  f"(known: {', '.join(ENDPOINT_KEYS)})")
            name, types = ENDPOINT_KEYS[key]
            _check_type(path, f"endpoints.{key}", value, types)
            setattr(spec, name, value)
        specs.append(spec)
    return specs


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Flags win over the file: every non-None override replaces the field of the same name."""
    names = {f.name for f in fields(RunConfig)}
    given = {}
    for name, value in overrides.items():
        if name not in names:
            raise ConfigError(f"unknown setting '{name}'")
        if config.endpoints and name in PER_ENDPOINT and value is not None:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag}: {config.source} has [[endpoints]]: set '{name}' in each endpoint instead")
        if value is not None and value != []:
            setattr(config, name, value)
            config.preset.discard(name)
            given[name] = value
    try:
        validate(config)
    except ConfigError as exc:
        raise _blame_flag(exc, config.source, given) from None
    return config


#: flags whose name is not the field's with dashes
_FLAG_NAMES = {"inputs": "--input", "policies": "--policy"}


def _blame_flag(exc: ConfigError, source: str, given: dict[str, Any]) -> ConfigError:
    """A bad value that came from a flag is named as that flag, not as the config file's key."""
    message = str(exc)
    for section, keys in SCHEMA.items():
        for key, (name, _) in keys.items():
            prefix = f"{source}: '{section}.{key}'"
            if name in given and message.startswith(prefix):
                flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
                value = given[name]
                shown = ",".join(map(str, value)) if isinstance(value, list) else value
                # a URL flag may carry credentials: never echo its value
                return ConfigError(f"{flag}{'' if 'url' in name or 'webhook' in name else f' {shown}'}: "
                                   f"{message[len(source) + 2:]}")
    return exc

def _check_type(path: Path, key: str, value: object, types: tuple[type, ...]) -> None:
    # bool is an int in Python: refuse true/false where a number is expected, and vice versa
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        wanted = " or ".join(_TYPE_NAMES[t] for t in types)
        raise ConfigError(f"{path}: '{key}' must be {wanted}, got {type(value).__name__} {value!r}")
