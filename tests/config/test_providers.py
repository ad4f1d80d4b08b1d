from __future__ import annotations

from typing import Any

import pytest

from pipeline import __version__
from pipeline.config.providers import (
    DEFAULT_BASE_URLS,
    HOSTS,
    USER_AGENT,
    base_url_problem,
    build_body,
    chat_url,
    models_url,
    request_headers,
    server_root,
)
from pipeline.core.records import OutputFormat
from pipeline.plan.schemas import response_format

MESSAGES = [{"role": "system", "content": "POLICY"}, {"role": "user", "content": "TEXT"}]


def body(provider: str, **changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"model": "gpt-oss-safeguard-20b", "system": "POLICY", "user": "TEXT",
                            "reasoning_effort": "high", "max_tokens": 4096, "keep_reasoning": False,
                            "api_key": "sk-test-1234"}
    return build_body(provider, **{**args, **changes})


# ---- bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "openrouter", "groq", "modelslab", "simulator"])
def test_policy_is_the_system_message_and_content_the_user_message(provider: str) -> None:
    b = body(provider)
    assert b["messages"] == MESSAGES
    assert b["model"] == "gpt-oss-safeguard-20b"


@pytest.mark.parametrize("provider", ["openai", "simulator"])
def test_openai_compatible_body_sets_reasoning_effort_and_max_tokens(provider: str) -> None:
    assert body(provider) == {"model": "gpt-oss-safeguard-20b", "messages": MESSAGES,
                              "reasoning_effort": "high", "max_tokens": 4096}


def test_openrouter_takes_effort_inside_reasoning() -> None:
    b = body("openrouter")
    assert b["reasoning"] == {"effort": "high", "exclude": True}
    assert b["max_tokens"] == 4096
    assert "reasoning_effort" not in b
    assert "key" not in b and "model_id" not in b


def test_openrouter_routes_only_to_providers_that_honour_every_parameter() -> None:
    assert body("openrouter")["provider"] == {"require_parameters": True}
    assert "provider" not in body("openai") and "provider" not in body("groq")


def test_openrouter_keeps_reasoning_when_asked() -> None:
    assert body("openrouter", keep_reasoning=True)["reasoning"] == {"effort": "high", "exclude": False}


def test_groq_body() -> None:
    b = body("groq", reasoning_effort="medium", max_tokens=65536)
    assert b["reasoning_effort"] == "medium"
    assert b["include_reasoning"] is False
    assert b["max_completion_tokens"] == 65536
    assert "max_tokens" not in b
    assert "reasoning" not in b


def test_groq_includes_reasoning_when_asked() -> None:
    assert body("groq", keep_reasoning=True)["include_reasoning"] is True


def test_modelslab_body_carries_model_id_and_key() -> None:
    b = body("modelslab", reasoning_effort="low")
    assert b["model_id"] == "gpt-oss-safeguard-20b"
    assert b["key"] == "sk-test-1234"
    assert b["model"] == "gpt-oss-safeguard-20b"
    assert b["reasoning_effort"] == "low"
    assert b["max_tokens"] == 4096


def test_modelslab_without_key_sends_no_key_field() -> None:
    assert "key" not in body("modelslab", api_key=None)
    assert "key" not in body("modelslab", api_key="")


def test_modelslab_default_model_is_its_own_id() -> None:
    assert HOSTS["modelslab"].model == "openai-gpt-oss-safeguard-20b"
    b = body("modelslab", model=HOSTS["modelslab"].model)
    assert b["model_id"] == b["model"] == "openai-gpt-oss-safeguard-20b"


def test_modelslab_default_concurrency_fits_the_smallest_queue() -> None:
    assert HOSTS["modelslab"].concurrency <= 5


def test_ollama_body_sends_reasoning_effort_like_openai() -> None:
    assert body("ollama") == body("openai")
    assert DEFAULT_BASE_URLS["ollama"] == "http://127.0.0.1:11434/v1"
    assert not HOSTS["ollama"].needs_key


def test_groq_cached_tokens_do_not_count_toward_tpm_elsewhere_they_do() -> None:
    assert HOSTS["groq"].cached_tokens_count_toward_tpm is False
    assert all(h.cached_tokens_count_toward_tpm for name, h in HOSTS.items() if name != "groq")


@pytest.mark.parametrize("provider", ["openai", "openrouter", "groq", "ollama", "simulator"])
def test_structured_output_is_sent_where_the_host_honours_it(provider: str) -> None:
    wanted = response_format(OutputFormat.CATEGORY)
    assert body(provider, response_format=wanted)["response_format"] == wanted
    assert "response_format" not in body(provider)


def test_structured_output_is_never_sent_to_modelslab() -> None:
    assert "response_format" not in body("modelslab", response_format=response_format(OutputFormat.BINARY))


@pytest.mark.parametrize("provider", ["openai", "openrouter", "groq", "ollama", "simulator"])
def test_key_is_never_in_the_body_of_other_providers(provider: str) -> None:
    assert "sk-test-1234" not in repr(body(provider))


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_effort_is_passed_through(effort: str) -> None:
    assert body("openai", reasoning_effort=effort)["reasoning_effort"] == effort
    assert body("openrouter", reasoning_effort=effort)["reasoning"]["effort"] == effort
    assert body("groq", reasoning_effort=effort)["reasoning_effort"] == effort


# ---- headers and URLs ----------------------------------------------------------------------------


def test_headers_carry_the_bearer_key() -> None:
    assert request_headers("groq", "sk-abc") == {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                                                 "Authorization": "Bearer sk-abc"}


@pytest.mark.parametrize("key", [None, ""])
def test_no_key_no_authorization_header(key: str | None) -> None:
    assert request_headers("openai", key) == {"Content-Type": "application/json", "User-Agent": USER_AGENT}


@pytest.mark.parametrize("provider", list(HOSTS))
def test_every_request_names_moderate_and_its_version(provider: str) -> None:
    assert request_headers(provider, None)["User-Agent"] == f"moderate/{__version__}"


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1/chat/completions"),
        ("https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1/chat/completions"),
        ("https://api.groq.com/openai/v1/chat/completions", "https://api.groq.com/openai/v1/chat/completions"),
        ("https://x/v1/chat/completions/", "https://x/v1/chat/completions"),
    ],
)
def test_chat_url(base: str, url: str) -> None:
    assert chat_url(base) == url


@pytest.mark.parametrize("base", ["https://x/v1?key=abc", "https://x/v1#frag", "https://x/v1/chat/completions?a=1"])
def test_chat_url_never_appends_the_path_after_a_query_string(base: str) -> None:
    with pytest.raises(ValueError, match="query string"):
        chat_url(base)


@pytest.mark.parametrize(
    ("base", "problem"),
    [
        ("ftp://example.com/v1", "http:// or https://"),
        ("not a url", "http:// or https://"),
        ("", "http:// or https://"),
        ("http://", "not a usable URL"),
        ("http://host:port/v1", "not a usable URL"),
        ("http://exa mple.com/v1", "not a usable URL"),
        ("https://x/v1?key=1", "query string"),
        ("https://x/v1?", "query string"),
        ("https://x/v1#top", "query string or fragment"),
    ],
)
def test_unusable_base_urls_are_named(base: str, problem: str) -> None:
    assert problem in (base_url_problem(base) or "")


def test_a_query_string_is_never_shown_in_the_problem() -> None:
    message = base_url_problem("https://x/v1?key=sk-secret-123") or ""
    assert "sk-secret-123" not in message and "https://x/v1?..." in message


@pytest.mark.parametrize("base", [*DEFAULT_BASE_URLS.values(), "http://[::1]:8000/v1", "https://h/v1/chat/completions"])
def test_usable_base_urls_pass(base: str) -> None:
    assert base_url_problem(base) is None


@pytest.mark.parametrize(
    ("base", "models", "root"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/models", "http://127.0.0.1:8000"),
        ("http://h:8000/v1/chat/completions", "http://h:8000/v1/models", "http://h:8000"),
        ("https://openrouter.ai/api/v1/", "https://openrouter.ai/api/v1/models", "https://openrouter.ai/api"),
    ],
)
def test_models_url_and_server_root(base: str, models: str, root: str) -> None:
    assert models_url(base) == models
    assert server_root(base) == root


def test_default_base_urls() -> None:
    assert DEFAULT_BASE_URLS["openai"] == "http://127.0.0.1:8000/v1"
    assert chat_url(DEFAULT_BASE_URLS["openrouter"]) == "https://openrouter.ai/api/v1/chat/completions"
    assert chat_url(DEFAULT_BASE_URLS["groq"]) == "https://api.groq.com/openai/v1/chat/completions"
    assert set(DEFAULT_BASE_URLS) == {"openai", "openrouter", "groq", "modelslab", "ollama"}
