from __future__ import annotations

from pathlib import Path

import pytest
from support import config_error, write_toml

from pipeline.config.load import apply_overrides, load_config
from pipeline.config.rules import ConfigError
from pipeline.config.settings import SCHEMA, RunConfig
from pipeline.core.records import OutputFormat
from pipeline.plan.policies import load_policies

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for p in (REPO / "configs").glob("*.toml") if p.name != "pricing.toml")


# ---- shipped configs -----------------------------------------------------------------------------


def test_there_is_at_least_one_shipped_run_config() -> None:
    assert SHIPPED, "configs/*.toml holds no run config"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.source == str(path)
    assert config.policies, "a shipped config names its policies"
    if path.name != "nightly.toml":  # the nightly job gets its input from the crontab line
        assert config.inputs, "a shipped config names its input"


def test_pricing_table_is_not_a_run_config() -> None:
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(REPO / "configs" / "pricing.toml")


def test_demo_config_values() -> None:
    config = load_config(REPO / "configs" / "demo.toml")
    assert config.provider == "simulator"
    assert config.output_format is OutputFormat.RATIONALE
    assert config.concurrency == 32
    assert config.out == "out/demo"
    assert config.simulator_latency_ms == 20
    assert len(config.policies) == 4


# ---- defaults and a full file --------------------------------------------------------------------


def test_no_path_gives_defaults() -> None:
    config = load_config(None)
    assert config == RunConfig()
    assert config.source == "<flags>"
    assert config.reasoning_effort == "low"
    assert config.api_key_env == "MODERATION_API_KEY"


def test_every_schema_key_is_a_config_field() -> None:
    names = set(RunConfig.__slots__)
    for section, keys in SCHEMA.items():
        for key, (name, _types) in keys.items():
            assert name in names, f"{section}.{key} -> {name}"


def test_docs_config_md_describes_every_section_and_key() -> None:
    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    for section, keys in SCHEMA.items():
        part = text.split(f"### `[{section}]`", 1)
        assert len(part) == 2, f"no [{section}] section"
        for key in keys:
            assert f"| `{key}` |" in part[1].split("\n### ", 1)[0], f"{section}.{key} is not described"


def test_every_section_and_key_is_read(tmp_path: Path) -> None:
    path = write_toml(tmp_path, """
[input]
paths = ["a.parquet", "b.jsonl"]
id_column = "uid"
text_column = "body"
limit = 100
[policies]
files = ["p.md"]
output_format = "binary"
[endpoint]
provider = "groq"
base_url = "http://x/v1"
model = "openai/gpt-oss-safeguard-120b"
api_key_env = "GROQ_KEY"
reasoning_effort = "high"
max_tokens = 1000
max_tokens_cap = 4000
context_tokens = 65536
request_timeout = 30
max_attempts = 3
invalid_output_retries = 0
keep_reasoning = true
too_long = "truncate"
[limits]
concurrency = 8
rpm = 600
tpm = 1.5e5
adaptive = false
max_cost = 2.5
[output]
dir = "out/x"
store = "s.sqlite"
shard_rows = 10
grace_seconds = 5
[pricing]
input_per_million = 0.1
cached_input_per_million = 0.05
output_per_million = 0.4
[simulator]
latency_ms = 1
jitter_ms = 0
fault_rate = 0.1
""")
    c = load_config(path)
    assert c.inputs == ["a.parquet", "b.jsonl"]
    assert (c.id_column, c.text_column, c.limit) == ("uid", "body", 100)
    assert c.policies == ["p.md"] and c.output_format is OutputFormat.BINARY
    assert (c.provider, c.base_url, c.model, c.api_key_env) == (
        "groq", "http://x/v1", "openai/gpt-oss-safeguard-120b", "GROQ_KEY")
    assert (c.reasoning_effort, c.max_tokens, c.max_tokens_cap, c.context_tokens) == ("high", 1000, 4000, 65536)
    assert (c.request_timeout, c.max_attempts, c.invalid_output_retries) == (30, 3, 0)
    assert c.keep_reasoning is True and c.too_long == "truncate"
    assert (c.concurrency, c.rpm, c.tpm, c.adaptive, c.max_cost) == (8, 600, 150000.0, False, 2.5)
    assert (c.out, c.store, c.shard_rows, c.grace_seconds) == ("out/x", "s.sqlite", 10, 5)
    assert (c.input_per_million, c.cached_input_per_million, c.output_per_million) == (0.1, 0.05, 0.4)
    assert (c.simulator_latency_ms, c.simulator_jitter_ms, c.simulator_fault_rate) == (1, 0, 0.1)


# ---- unknown names -------------------------------------------------------------------------------


def test_unknown_section_names_file_and_section(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[limit]\nrpm = 5\n")
    assert "[limit]" in message and "limits" in message


def test_unknown_key_names_file_and_dotted_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[limits]\nrps = 5\n")
    assert "'limits.rps'" in message
    assert "rpm" in message  # the known keys are listed


def test_top_level_value_is_not_a_section(tmp_path: Path) -> None:
    message = config_error(tmp_path, 'model = "x"\n')
    assert "[model]" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[limits\nrpm = 5\n")
    assert "not valid TOML" in message


# ---- wrong types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("limits", "rpm", '"600"'),
        ("limits", "rpm", "true"),
        ("limits", "tpm", "[1]"),
        ("limits", "concurrency", "1.5"),
        ("limits", "concurrency", "false"),
        ("limits", "adaptive", "1"),
        ("limits", "max_cost", '"5"'),
        ("endpoint", "max_tokens", '"8192"'),
        ("endpoint", "request_timeout", "true"),
        ("endpoint", "keep_reasoning", '"yes"'),
        ("endpoint", "model", "20"),
        ("input", "paths", '"a.jsonl"'),
        ("input", "limit", "false"),
        ("policies", "files", '"p.md"'),
        ("output", "shard_rows", "1e3"),
        ("pricing", "input_per_million", '"0.075"'),
        ("simulator", "latency_ms", "true"),
    ],
)
def test_wrong_type_names_file_and_key(tmp_path: Path, section: str, key: str, value: str) -> None:
    message = config_error(tmp_path, f"[{section}]\n{key} = {value}\n")
    assert f"'{section}.{key}'" in message


def test_bool_is_not_accepted_as_a_number(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[limits]\nrpm = true\n")
    assert "'limits.rpm' must be an integer or a number" in message
    assert "bool True" in message


def test_integer_is_accepted_where_a_number_is_expected(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, "[endpoint]\nrequest_timeout = 10\n[limits]\nmax_cost = 3\n"))
    assert config.request_timeout == 10 and config.max_cost == 3


def test_list_of_non_strings_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[input]\npaths = [1, 2]\n")
    assert "'input.paths' must be a list of strings" in message


# ---- overrides -----------------------------------------------------------------------------------


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, '[limits]\nrpm = 600\nconcurrency = 4\n[endpoint]\nmodel = "a"\n'))
    apply_overrides(config, {"rpm": 30.0, "model": "b", "inputs": ["x.jsonl"]})
    assert config.rpm == 30.0
    assert config.model == "b"
    assert config.inputs == ["x.jsonl"]
    assert config.concurrency == 4  # not overridden: the file's value stays


def test_none_and_empty_list_overrides_keep_the_file_value(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, '[limits]\nrpm = 600\n[input]\npaths = ["a.jsonl"]\n'))
    apply_overrides(config, {"rpm": None, "inputs": []})
    assert config.rpm == 600
    assert config.inputs == ["a.jsonl"]


def test_false_override_is_applied() -> None:
    config = apply_overrides(RunConfig(force=True), {"force": False})
    assert config.force is False


def test_unknown_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'rps'"):
        apply_overrides(RunConfig(), {"rps": 5})


def test_overrides_are_validated(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, "[limits]\nconcurrency = 4\n"))
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, {"concurrency": 0})
    assert "'limits.concurrency'" in str(info.value)
    with pytest.raises(ConfigError, match=r"'endpoint\.reasoning_effort'"):
        apply_overrides(RunConfig(), {"reasoning_effort": "extreme"})


def test_output_format_override_by_name() -> None:
    config = apply_overrides(RunConfig(), {"output_format": "binary"})
    assert config.output_format is OutputFormat.BINARY


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_names_policies_that_load_from_any_folder(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(path.resolve())
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in load_policies(config.policies)] == ["spam", "hate_harassment", "self_harm",
                                                                "sexual_minors"]


def test_nightly_settings_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[input]\nkeep_columns = ['gold']\nsample = 0.1\nseed = 3\n[output]\nlog_format = 'json'\n"
                    "[quality]\ncanaries = 'c.jsonl'\ndrift_threshold = 0.1\n[pricing]\ngpu_hour_usd = 2\n")
    c = load_config(path)
    assert (c.keep_columns, c.sample, c.seed, c.log_format, c.canaries, c.drift_threshold, c.gpu_hour_usd) == (
        ["gold"], 0.1, 3, "json", "c.jsonl", 0.1, 2)


TWO_HOSTS = """
[endpoint]
reasoning_effort = "medium"
[[endpoints]]
name = "vllm"
base_url = "http://10.0.0.5:8000/v1"
concurrency = 48
[[endpoints]]
name = "groq"
provider = "groq"
api_key_env = "GROQ_KEY"
rpm = 300
"""


def test_endpoints_tables_give_each_host_its_presets_and_the_first_stands_for_the_run(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, TWO_HOSTS))
    vllm, groq = config.endpoints
    assert (vllm.name, vllm.provider, vllm.model, vllm.concurrency) == ("vllm", "openai",
                                                                        "openai/gpt-oss-safeguard-20b", 48)
    assert (groq.provider, groq.concurrency, groq.rpm, groq.api_key_env) == ("groq", 64, 300, "GROQ_KEY")
    assert (config.provider, config.base_url, config.concurrency) == ("openai", "http://10.0.0.5:8000/v1", 112)
    assert config.reasoning_effort == "medium" and config.rpm is None


def test_endpoints_that_serve_different_models_are_refused(tmp_path: Path) -> None:
    text = TWO_HOSTS + 'model = "openai/gpt-oss-safeguard-120b"\n'
    message = config_error(tmp_path, text)
    assert "serve different models" in message and "groq: openai/gpt-oss-safeguard-120b" in message


def test_one_model_spelled_by_each_host_its_own_way_is_one_model(tmp_path: Path) -> None:
    text = TWO_HOSTS + '[[endpoints]]\nname = "ml"\nprovider = "modelslab"\n'
    config = load_config(write_toml(tmp_path, text))
    assert config.endpoints[2].model == "openai-gpt-oss-safeguard-20b" and config.endpoints[2].concurrency == 5


def test_where_requests_go_is_refused_outside_the_endpoints_when_they_are_used(tmp_path: Path) -> None:
    assert "'endpoint.base_url' is set per endpoint" in config_error(
        tmp_path, TWO_HOSTS.replace('reasoning_effort = "medium"', 'base_url = "http://x/v1"'))
    assert "'limits.concurrency' is set per endpoint" in config_error(tmp_path,
                                                                      TWO_HOSTS + "[limits]\nconcurrency = 4\n")
    config = load_config(write_toml(tmp_path, TWO_HOSTS))
    with pytest.raises(ConfigError, match=r"^--base-url: .* has \[\[endpoints\]\]: set 'base_url' in each endpoint"):
        apply_overrides(config, {"base_url": "http://127.0.0.1:9/v1"})


def test_an_endpoint_mistake_names_the_endpoint_and_the_key(tmp_path: Path) -> None:
    assert "endpoint 'groq': 'endpoints.weight' must be a finite number greater than 0" in config_error(
        tmp_path, TWO_HOSTS + "weight = 0\n")
    assert "'endpoints.name' must not be empty, padded or hold control characters" in config_error(
        tmp_path, TWO_HOSTS.replace('name = "groq"', 'name = "gr\\noq"'))
    assert "unknown key 'endpoints.url' in endpoint 2" in config_error(tmp_path, TWO_HOSTS + 'url = "x"\n')
    assert "'endpoints.name' = 'vllm' is used twice" in config_error(
        tmp_path, TWO_HOSTS.replace('name = "groq"', 'name = "vllm"'))
    assert "'endpoints.rpm' must be an integer or a number, got str" in config_error(
        tmp_path, TWO_HOSTS.replace("rpm = 300", 'rpm = "300"'))
