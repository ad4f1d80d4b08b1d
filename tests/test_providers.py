from __future__ import annotations

from typing import Any

import pytest

from pipeline.providers import DEFAULT_BASE_URLS, build_body, chat_url, request_headers

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


@pytest.mark.parametrize("provider", ["openai", "openrouter", "groq", "simulator"])
def test_key_is_never_in_the_body_of_other_providers(provider: str) -> None:
    assert "sk-test-1234" not in repr(body(provider))


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_effort_is_passed_through(effort: str) -> None:
    assert body("openai", reasoning_effort=effort)["reasoning_effort"] == effort
    assert body("openrouter", reasoning_effort=effort)["reasoning"]["effort"] == effort
    assert body("groq", reasoning_effort=effort)["reasoning_effort"] == effort


# ---- headers and URLs ----------------------------------------------------------------------------


def test_headers_carry_the_bearer_key() -> None:
    assert request_headers("groq", "sk-abc") == {"Content-Type": "application/json",
                                                 "Authorization": "Bearer sk-abc"}


@pytest.mark.parametrize("key", [None, ""])
def test_no_key_no_authorization_header(key: str | None) -> None:
    assert request_headers("openai", key) == {"Content-Type": "application/json"}


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


def test_default_base_urls() -> None:
    assert DEFAULT_BASE_URLS["openai"] == "http://127.0.0.1:8000/v1"
    assert chat_url(DEFAULT_BASE_URLS["openrouter"]) == "https://openrouter.ai/api/v1/chat/completions"
    assert chat_url(DEFAULT_BASE_URLS["groq"]) == "https://api.groq.com/openai/v1/chat/completions"
    assert set(DEFAULT_BASE_URLS) == {"openai", "openrouter", "groq", "modelslab"}
