"""ModelsLab: ``POST /api/v7/llm/chat/completions`` with ``model_id`` and ``key`` in the body.

Its docs: errors are ``{"status": "error", "message": ...}``, mostly with HTTP 200; a full account
queue (5, 10 or 15 requests by plan) is a 429 whose body carries ``retry_after`` (no header);
queued work answers ``{"status": "processing", "id", "eta", "fetch_result"}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.hosts.base import OpenAI, Reply

FETCH_PATH = "/api/v7/llm/fetch/{id}"


def status_error(message: str, status: int = 200, **extra: Any) -> Reply:
    return Reply(status, orjson.dumps({"status": "error", "message": message, **extra}))


class ModelsLab(OpenAI):
    name = "modelslab"
    paths = ("/api/v7/llm/chat/completions",)

    def model(self, body: dict[str, Any]) -> Any:
        return body.get("model_id")

    def authorised(self, header: str | None, body: dict[str, Any], key: str) -> bool:
        return body.get("key") == key

    def error(self, status: int, kind: str, message: str, code: str | int | None = None) -> Reply:
        return status_error(message, status if status >= 429 else 200)

    def bad_key(self) -> Reply:
        return status_error("Invalid Api Key: the key field does not match an active API key")

    def unknown_model(self, model: Any, served: list[str]) -> Reply:
        if model is None:
            return status_error("The model_id field is required.")
        return status_error(f"Model not found: {model!r} is not a valid model_id")

    def no_credit(self, retry_after: float | None = None) -> Reply:
        return status_error("Insufficient credits: please recharge your wallet to continue")

    def limited(self, config: SimulatorConfig, wait: float) -> Reply:
        return self.full(config.queue, wait)

    def busy(self) -> Reply:
        return status_error("Server busy: request queue is full, retry later", 429, retry_after=1)

    def full(self, queue: int, retry_after: float) -> Reply:
        """A full account queue: 429 with ``retry_after`` in the body only."""
        message = f"Rate limit exceeded. Maximum {queue} queued requests allowed."
        return status_error(message, 429, retry_after=retry_after)


def processing(request_id: int, eta: float, fetch_url: str) -> Reply:
    """A queued request: come back to ``fetch_result`` after ``eta`` seconds."""
    body = {"status": "processing", "id": request_id, "eta": eta, "fetch_result": fetch_url,
            "message": "Request is being processed; fetch the result from fetch_result after eta seconds."}
    return Reply(200, orjson.dumps(body))
