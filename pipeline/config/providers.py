"""Provider presets: where to send requests and how each host wants the request body.

All hosts speak OpenAI chat completions; they differ in how reasoning effort is passed, in a few
extra fields and in what they offer besides (a model list, structured output, a queue size).
The policy is always the system message and the content the user message. Everything here is
pure: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline import __version__

USER_AGENT = f"moderate/{__version__}"
SIMULATOR_MODEL = "gpt-oss-safeguard-20b-simulator"


@dataclass(frozen=True, slots=True)
class Host:
    """What one kind of host needs and offers (see docs/hosts.md)."""

    #: base URL used when none is configured (None: started in-process).
    base_url: str | None
    #: model id used when none is configured.
    model: str
    #: requests in flight when none is configured.
    concurrency: int
    #: a hosted service that refuses requests without an API key.
    needs_key: bool
    #: GET <base>/models lists the served models.
    models_endpoint: bool
    #: honours response_format {"type": "json_schema", ...}.
    json_schema: bool
    #: prompt tokens served from the host's cache count toward its tokens-per-minute limit.
    cached_tokens_count_toward_tpm: bool = True
    #: serves Prometheus metrics at <server root>/metrics (vLLM).
    prometheus_metrics: bool = False


HOSTS: dict[str, Host] = {
    # vLLM (`vllm serve openai/gpt-oss-safeguard-20b`), LM Studio and other OpenAI-compatible servers
    "openai": Host("http://127.0.0.1:8000/v1", "openai/gpt-oss-safeguard-20b", 64, needs_key=False,
                   models_endpoint=True, json_schema=True, prometheus_metrics=True),
    "openrouter": Host("https://openrouter.ai/api/v1", "openai/gpt-oss-safeguard-20b", 64, needs_key=True,
                       models_endpoint=True, json_schema=True),
    # Groq does not count prompt-cache hits toward its TPM limit
    "groq": Host("https://api.groq.com/openai/v1", "openai/gpt-oss-safeguard-20b", 64, needs_key=True,
                 models_endpoint=True, json_schema=True, cached_tokens_count_toward_tpm=False),
    # an account's queue holds 5, 10 or 15 requests by plan: the default fits the smallest
    "modelslab": Host("https://modelslab.com/api/v7/llm", "openai-gpt-oss-safeguard-20b", 5, needs_key=True,
                      models_endpoint=False, json_schema=False),
    # Ollama answers OLLAMA_NUM_PARALLEL requests at once and queues the rest
    "ollama": Host("http://127.0.0.1:11434/v1", "gpt-oss-safeguard:20b", 4, needs_key=False,
                   models_endpoint=True, json_schema=True),
    "simulator": Host(None, SIMULATOR_MODEL, 64, needs_key=False, models_endpoint=True, json_schema=True),
}

DEFAULT_BASE_URLS: dict[str, str] = {name: h.base_url for name, h in HOSTS.items() if h.base_url}
RESPONSE_FORMATS = ("text", "json_schema")


def base_url_problem(base_url: str) -> str | None:
    """Why a base URL cannot be used (None when it can).

    >>> base_url_problem("ftp://example.com/v1")
    "must start with http:// or https:// (got 'ftp://example.com/v1')"
    >>> base_url_problem("https://x/v1?key=1")
    "must not have a query string or fragment (got 'https://x/v1?...')"
    """
    try:
        parts = urlsplit(base_url)  # raises ValueError for an unclosed [IPv6 address]
        if parts.port == 0:  # .port raises ValueError for a port that is not a number or over 65535
            raise ValueError
    except ValueError:
        return f"is not a usable URL (got {_shown(base_url)!r})"
    if parts.scheme not in ("http", "https"):
        return f"must start with http:// or https:// (got {_shown(base_url)!r})"
    if not parts.hostname or any(c.isspace() for c in base_url):
        return f"is not a usable URL (got {_shown(base_url)!r})"
    if parts.query or parts.fragment or "?" in base_url or "#" in base_url:
        return f"must not have a query string or fragment (got {_shown(base_url)!r})"
    return None


def _shown(base_url: str) -> str:
    """A URL for a message: a query string or a user:password@ may hold a key, so they are never shown."""
    head = base_url.split("?", 1)[0].split("#", 1)[0]
    cut = "?..." if len(head) < len(base_url) else ""
    scheme, sep, rest = head.rpartition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        head = f"{scheme}{sep}***@{authority.rsplit('@', 1)[1]}{slash}{path}"
    return (head if len(head) <= 100 else head[:100] + "...") + cut


def chat_url(base_url: str) -> str:
    """The chat-completions URL for a base URL (a full endpoint URL is kept as it is).

    A query string or fragment is refused (ValueError): the path must not land after it.
    """
    parts = urlsplit(base_url.strip())
    if parts.query or parts.fragment:
        raise ValueError("a base URL must not have a query string or fragment")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def models_url(base_url: str) -> str:
    """GET this to list the served models: ``<base>/models``."""
    return chat_url(base_url).removesuffix("/chat/completions") + "/models"


def server_root(base_url: str) -> str:
    """The server's root (``http://host:8000`` for ``http://host:8000/v1``): where vLLM serves /metrics."""
    parts = urlsplit(chat_url(base_url))
    path = parts.path.removesuffix("/chat/completions").rstrip("/").removesuffix("/v1")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def request_headers(provider: str, api_key: str | None) -> dict[str, str]:
    """Headers of every request: JSON, who is calling, and the bearer key when there is one."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
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
    response_format: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body for one request.

    ``response_format`` (from `pipeline.plan.schemas.response_format`) asks for structured output; it is
    sent only to hosts that honour it.

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
        # route only to providers that honour every parameter sent (the effort above included)
        body["provider"] = {"require_parameters": True}
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
    host = HOSTS.get(provider)
    if response_format is not None and (host is None or host.json_schema):
        body["response_format"] = response_format
    return body


def run_model(provider: str, model: str) -> str:
    """The model name a run sends and records: the configured one, except that the built-in simulator
    serves its own name (a config pointed at the simulator keeps its real model id for other hosts).

    >>> run_model("simulator", "openai/gpt-oss-safeguard-20b")
    'gpt-oss-safeguard-20b-simulator'
    >>> run_model("groq", "openai/gpt-oss-safeguard-20b")
    'openai/gpt-oss-safeguard-20b'
    """
    if provider == "simulator" and "simulator" not in model:
        return SIMULATOR_MODEL
    return model


def model_family(model: str) -> str:
    """The model a host's id names, whatever the host's spelling: endpoints of one run must agree on it.

    >>> model_family("openai/gpt-oss-safeguard-20b"), model_family("openai-gpt-oss-safeguard-20b")
    ('gpt-oss-safeguard-20b', 'gpt-oss-safeguard-20b')
    >>> model_family("gpt-oss-safeguard:20b"), model_family("GPT-OSS-Safeguard-120B")
    ('gpt-oss-safeguard-20b', 'gpt-oss-safeguard-120b')
    """
    name = model.strip().lower().rsplit("/", 1)[-1].replace(":", "-")
    return name.removeprefix("openai-")
