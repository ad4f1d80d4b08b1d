"""Provider presets: where to send requests and how each host wants the request body.

All hosts speak OpenAI chat completions; they differ in how reasoning effort is passed and in a
few extra fields. The policy is always the system message and the content the user message.
"""

from __future__ import annotations

from typing import Any

DEFAULT_BASE_URLS: dict[str, str] = {
    # vLLM (`vllm serve openai/gpt-oss-safeguard-20b`), Ollama, LM Studio and other OpenAI-compatible servers
    "openai": "http://127.0.0.1:8000/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "groq": "https://api.groq.com/openai/v1",
    "modelslab": "https://modelslab.com/api/v7/llm",
}


def chat_url(base_url: str) -> str:
    """The chat-completions URL for a base URL (a full endpoint URL is kept as it is)."""
    base = base_url.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


def request_headers(provider: str, api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def build_body(
    provider: str,
    *,
    model: str,
    system: str,
    user: str,
    reasoning_effort: str,
    max_tokens: int,
    keep_reasoning: bool,
    api_key: str | None,
) -> dict[str, Any]:
    """The JSON body for one request.

    >>> build_body("groq", model="m", system="s", user="u", reasoning_effort="low",
    ...            max_tokens=10, keep_reasoning=False, api_key=None)["include_reasoning"]
    False
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }
    if provider == "openrouter":
        body["reasoning"] = {"effort": reasoning_effort, "exclude": not keep_reasoning}
        body["max_tokens"] = max_tokens
    elif provider == "groq":
        body["reasoning_effort"] = reasoning_effort
        body["include_reasoning"] = keep_reasoning
        body["max_completion_tokens"] = max_tokens
    else:
        body["reasoning_effort"] = reasoning_effort
        body["max_tokens"] = max_tokens
    if provider == "modelslab":
        # ModelsLab's documented body also carries the model and key as fields of its own.
        body["model_id"] = model
        if api_key:
            body["key"] = api_key
    return body
