"""vLLM's OpenAI server: ``{"object": "error", ...}`` errors, no 429 (requests wait for an engine
slot instead), Prometheus ``/metrics`` with the scheduler's running and waiting gauges."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.hosts.base import OpenAI, Reply, Usage

_TYPES = {400: "BadRequestError", 401: "Unauthorized", 404: "NotFoundError", 429: "TooManyRequests",
          500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailableError",
          504: "GatewayTimeout"}


class VLLM(OpenAI):
    name = "vllm"

    def error(self, status: int, kind: str, message: str, code: str | int | None = None) -> Reply:
        body = {"object": "error", "message": message, "type": _TYPES.get(status, "BadRequestError"),
                "param": None, "code": status}
        return Reply(status, orjson.dumps(body))

    def bad_key(self) -> Reply:
        return Reply(401, orjson.dumps({"error": "Unauthorized"}))

    def unknown_model(self, model: Any, served: list[str]) -> Reply:
        return self.error(404, "", f"The model `{model}` does not exist.")

    def usage(self, usage: Usage, config: SimulatorConfig) -> dict[str, Any]:
        return {"prompt_tokens": usage.prompt, "total_tokens": usage.prompt + usage.completion,
                "completion_tokens": usage.completion, "prompt_tokens_details": None}


def metrics(model: str, running: int, waiting: int, max_num_seqs: int) -> bytes:
    """The scheduler gauges in Prometheus' text format, labelled as vLLM's V1 engine labels them."""
    labels = f'model_name="{model}",engine="0"'
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{labels}}} {float(running)}",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{labels}}} {float(waiting)}",
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{labels}}} {min(1.0, running / max_num_seqs)}",
    ]
    return ("\n".join(lines) + "\n").encode()
