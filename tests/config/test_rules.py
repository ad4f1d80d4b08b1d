from __future__ import annotations

from pathlib import Path

import pytest
from support import config_error, write_toml

from pipeline.config.load import apply_overrides, load_config
from pipeline.config.rules import ConfigError, check_context_room, validate
from pipeline.config.settings import RunConfig
from pipeline.core.records import OutputFormat

# ---- value checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[policies]\noutput_format = "yaml"\n', "policies.output_format"),
        ('[endpoint]\nprovider = "azure"\n', "endpoint.provider"),
        ('[endpoint]\nreasoning_effort = "max"\n', "endpoint.reasoning_effort"),
        ('[endpoint]\ntoo_long = "drop"\n', "endpoint.too_long"),
        ("[limits]\nconcurrency = 0\n", "limits.concurrency"),
        ("[endpoint]\nmax_tokens = -1\n", "endpoint.max_tokens"),
        ("[endpoint]\nmax_attempts = 0\n", "endpoint.max_attempts"),
        ("[endpoint]\nrequest_timeout = 0.0\n", "endpoint.request_timeout"),
        ("[endpoint]\ncontext_tokens = 0\n", "endpoint.context_tokens"),
        ("[output]\nshard_rows = 0\n", "output.shard_rows"),
        ("[limits]\nrpm = -1\n", "limits.rpm"),
        ("[limits]\ntpm = -0.5\n", "limits.tpm"),
        ("[limits]\nmax_cost = -1\n", "limits.max_cost"),
        ("[input]\nlimit = -3\n", "input.limit"),
        ("[endpoint]\ninvalid_output_retries = -1\n", "endpoint.invalid_output_retries"),
        ("[limits]\nrpm = inf\n", "limits.rpm"),
        ("[limits]\ntpm = nan\n", "limits.tpm"),
        ("[endpoint]\nrequest_timeout = inf\n", "endpoint.request_timeout"),
        ("[limits]\nmax_cost = nan\n", "limits.max_cost"),
        ("[simulator]\nfault_rate = 1.5\n", "simulator.fault_rate"),
        ("[simulator]\nlatency_ms = -1\n", "simulator.latency_ms"),
        ("[output]\nshard_rows = 10000001\n", "output.shard_rows"),
        ("[limits]\nconcurrency = 100001\n", "limits.concurrency"),
        ("[limits]\nqueue = 100001\n", "limits.queue"),
        ("[quality]\ndrift_threshold = 1.5\n", "quality.drift_threshold"),
        ('[endpoint]\nmodel = ""\n', "endpoint.model"),
        ('[endpoint]\napi_key_env = ""\n', "endpoint.api_key_env"),
        ('[input]\ntext_column = ""\n', "input.text_column"),
        ('[input]\nid_column = " "\n', "input.id_column"),
        ('[output]\ndir = ""\n', "output.dir"),
        ("[storage]\ntimeout = inf\n", "storage.timeout"),
        ('[endpoint]\nbase_url = "http://[::1"\n', "endpoint.base_url"),
        ('[policies]\noutput_format = "policy"\nviolation_pattern = "1"\n', "policies.label_pattern"),
        ('[policies]\noutput_format = "policy"\nlabel_pattern = "(SP\\\\d)"\n', "policies.violation_pattern"),
        ('[policies]\noutput_format = "policy"\nlabel_pattern = "(SP"\nviolation_pattern = "x"\n',
         "policies.label_pattern"),
        ('[policies]\noutput_format = "policy"\nlabel_pattern = "(D)-(SP)"\nviolation_pattern = "x"\n',
         "policies.label_pattern"),
        ('[policies]\noutput_format = "policy"\nlabel_pattern = "x"\nviolation_pattern = "[a-"\n',
         "policies.violation_pattern"),
        ('[policies]\nlabel_pattern = "(unclosed"\n', "policies.label_pattern"),
        ("[simulator]\nanswer_templates = [[\"phrase\", \"only two\"]]\n", "simulator.answer_templates"),
    ],
)
def test_invalid_value_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(tmp_path, text)
    assert f"'{key}'" in message


def test_a_drift_threshold_of_one_is_allowed(tmp_path: Path) -> None:
    assert load_config(write_toml(tmp_path, "[quality]\ndrift_threshold = 1\n")).drift_threshold == 1


def test_output_format_string_becomes_the_enum(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, '[policies]\noutput_format = "category"\n'))
    assert config.output_format is OutputFormat.CATEGORY


def test_max_tokens_cap_is_raised_to_max_tokens(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, "[endpoint]\nmax_tokens = 50000\nmax_tokens_cap = 1000\n"))
    assert config.max_tokens_cap == 50000


def test_zero_rpm_and_zero_budget_are_allowed(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, "[limits]\nrpm = 0\nmax_cost = 0\n"))
    assert config.rpm == 0 and config.max_cost == 0


def test_validate_accepts_the_defaults() -> None:
    config = RunConfig()
    validate(config)
    assert config.output_format is OutputFormat.RATIONALE


# ---- provider presets, base URL, structured output, context room -------------------------------


def test_modelslab_without_a_model_uses_modelslab_model_id(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, '[endpoint]\nprovider = "modelslab"\n'))
    assert config.model == "openai-gpt-oss-safeguard-20b"


def test_provider_flag_alone_picks_that_providers_model_and_concurrency(tmp_path: Path) -> None:
    config = apply_overrides(load_config(write_toml(tmp_path, "[input]\nlimit = 3\n")), {"provider": "modelslab"})
    assert (config.model, config.concurrency) == ("openai-gpt-oss-safeguard-20b", 5)
    config = apply_overrides(load_config(None), {"provider": "ollama"})
    assert config.model == "gpt-oss-safeguard:20b"


def test_an_explicit_model_wins_over_the_provider_default(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, '[endpoint]\nprovider = "openai"\nmodel = "mine"\n'))
    assert apply_overrides(config, {"provider": "modelslab"}).model == "mine"
    assert apply_overrides(load_config(None), {"provider": "modelslab", "model": "x"}).model == "x"
    config = RunConfig(provider="modelslab", model="built-in-name")
    validate(config)
    assert config.model == "built-in-name"


def test_queue_sets_concurrency_unless_concurrency_is_given(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, '[endpoint]\nprovider = "modelslab"\n[limits]\nqueue = 10\n'))
    assert config.concurrency == 10
    text = '[endpoint]\nprovider = "modelslab"\n[limits]\nqueue = 15\nconcurrency = 3\n'
    config = load_config(write_toml(tmp_path, text))
    assert config.concurrency == 3
    assert apply_overrides(config, {"concurrency": 12}).concurrency == 12


def test_queue_must_be_positive(tmp_path: Path) -> None:
    assert "'limits.queue'" in config_error(tmp_path, "[limits]\nqueue = 0\n")


def test_other_providers_keep_the_usual_default_concurrency() -> None:
    for provider in ("openai", "openrouter", "groq"):
        assert apply_overrides(load_config(None), {"provider": provider}).concurrency == 64


@pytest.mark.parametrize("url", ["ftp://example.com/v1", "not a url", "http://", "https://x/v1?key=1"])
def test_unusable_base_url_is_a_config_error(tmp_path: Path, url: str) -> None:
    message = config_error(tmp_path, f'[endpoint]\nbase_url = "{url}"\n')
    assert "'endpoint.base_url'" in message
    with pytest.raises(ConfigError, match=r"endpoint\.base_url"):
        apply_overrides(load_config(None), {"base_url": url})


def test_response_format_is_text_unless_asked(tmp_path: Path) -> None:
    assert load_config(None).response_format == "text"
    config = load_config(write_toml(tmp_path, '[endpoint]\nprovider = "groq"\nresponse_format = "json_schema"\n'))
    assert config.response_format == "json_schema"


def test_response_format_must_be_known_and_supported(tmp_path: Path) -> None:
    assert "text, json_schema" in config_error(tmp_path, '[endpoint]\nresponse_format = "xml"\n')
    message = config_error(tmp_path, '[endpoint]\nprovider = "modelslab"\nresponse_format = "json_schema"\n')
    assert "not supported by provider modelslab" in message


def test_no_room_for_the_text_is_a_config_error() -> None:
    config = RunConfig(context_tokens=4096, max_tokens=4000)
    with pytest.raises(ConfigError, match=r"policy .spam. .*no room for the text"):
        check_context_room(config, {"hate": 10, "spam": 600})
    check_context_room(config, {"hate": 10})  # room left: no error
    check_context_room(RunConfig(), {"spam": 600})


@pytest.mark.parametrize(("toml", "words"), [
    ("[input]\nkeep_columns = ['a', 'a']", "names a column twice"),
    ("[input]\nkeep_columns = [1]", "list of strings"),
    ("[input]\nsample = 2.5", "row count"),
    ("[input]\nsample = 0", "row count"),
    ("[output]\nlog_format = 'xml'", "'text' or 'json'"),
    ("[quality]\ndrift_threshold = 0", "greater than 0"),
    ("[quality]\ndrift_runs = 0", "at least 1"),
    ("[pricing]\ngpu_hour_usd = -1", "greater than 0"),
])
def test_nightly_settings_are_checked(tmp_path: Path, toml: str, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=words):
        load_config(path)


def test_policy_format_refuses_a_json_schema_response_format(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[policies]\noutput_format = "policy"\nlabel_pattern = "SP\\\\d"\n'
                                     'violation_pattern = "SP[2-4]"\n[endpoint]\nresponse_format = "json_schema"\n')
    assert "endpoint.response_format" in message


def test_patterns_are_kept_but_not_required_by_the_other_formats(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[policies]\noutput_format = "policy"\nlabel_pattern = "D-(SP\\\\d)"\n'
                                'violation_pattern = "SP[2-4]"\n')
    config = apply_overrides(load_config(path), {"output_format": "rationale"})
    assert config.output_format is OutputFormat.RATIONALE and config.label_pattern == "D-(SP\\d)"


@pytest.mark.parametrize("pattern", ["(\\\\w+\\\\s?)+$", "D-((?:SP)+)*", "(?:x|(a*)*b)"])
def test_a_pattern_that_repeats_a_repeat_is_refused_before_it_can_hang_a_run(tmp_path: Path, pattern: str) -> None:
    message = config_error(tmp_path, f'[policies]\noutput_format = "policy"\nlabel_pattern = "{pattern}"\n'
                                     'violation_pattern = "SP[2-4]"\n')
    assert "'policies.label_pattern'" in message and "repeats a repeat" in message and "\n" not in message


@pytest.mark.parametrize("pattern", ["D-(SP\\\\d)", "(?:-\\\\s?[A-Z])+", "(\\\\w++\\\\s?)+$", "(?:SP\\\\d{2})+"])
def test_patterns_that_cannot_backtrack_without_end_are_accepted(tmp_path: Path, pattern: str) -> None:
    path = write_toml(tmp_path, f'[policies]\noutput_format = "policy"\nlabel_pattern = "{pattern}"\n'
                                'violation_pattern = "SP[2-4]"\n')
    assert load_config(path).label_pattern == pattern.replace("\\\\", "\\")
