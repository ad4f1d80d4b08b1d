"""``moderate simulate --batch``: answer a prepared OpenAI batch input file offline.

Each input line ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`` gets
one result line as OpenAI's batch API and ``vllm run-batch`` write them::

    {"id": "batch_req_…", "custom_id": "…", "response": {"status_code": 200, "request_id": "…",
     "body": {<chat.completion with usage>}}, "error": null}

Transport faults become error lines (``response`` with a 5xx/429 status and an error body, or
``response: null`` with an ``error`` object); model faults become billed junk answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from pathlib import Path
from typing import IO, Any

import orjson

from pipeline.output.outfiles import open_output
from pipeline.simulator.config import SimulatorConfig, SimulatorStats
from pipeline.simulator.host import Host
from pipeline.simulator.hosts import Reply

CHAT_URL = "/v1/chat/completions"
#: faults with no HTTP answer at all: the line gets ``response: null`` and this error.
_NO_ANSWER = {
    "reset": ("server_error", "the connection to the model server was reset"),
    "hang": ("request_timeout", "the model server did not answer in time"),
    "truncated_body": ("server_error", "the model server's answer was cut short"),
    "non_json": ("server_error", "the model server's answer was not JSON"),
    "endless_body": ("server_error", "the model server's answer never ended"),
}
_HTML_STATUS_TEXT = {502: "Bad Gateway", 503: "Service Unavailable"}


class BatchInputError(ValueError):
    """A line of the input file that is not a batch request (message names file and line)."""


@dataclasses.dataclass(slots=True)
class BatchSummary:
    lines: int = 0
    succeeded: int = 0
    failed: int = 0


def _body_of(reply: Reply) -> Any:
    if reply.content_type == "text/html":
        text = _HTML_STATUS_TEXT.get(reply.status, "Server Error")
        return {"error": {"message": text, "type": "server_error", "code": None}}
    return orjson.loads(reply.body)


class _Ids:
    """Deterministic line and request ids (seeded), in OpenAI's or vLLM's style."""

    def __init__(self, seed: int, vllm: bool) -> None:
        self._rng = random.Random(seed + 2)
        self._vllm = vllm

    def line(self) -> str:
        if self._vllm:
            return f"vllm-{self._rng.getrandbits(128):032x}"
        return f"batch_req_{self._rng.getrandbits(96):024x}"

    def request(self) -> str:
        if self._vllm:
            return f"vllm-batch-{self._rng.getrandbits(128):032x}"
        return f"req_{self._rng.getrandbits(128):032x}"


def answer_line(host: Host, ids: _Ids, request: dict[str, Any]) -> dict[str, Any]:
    """The result line for one parsed input line."""
    line: dict[str, Any] = {"id": ids.line(), "custom_id": request["custom_id"], "response": None, "error": None}
    if request.get("url") != CHAT_URL or request.get("method", "POST") != "POST":
        line["error"] = {"code": "invalid_url", "message": f"only POST {CHAT_URL} is supported"}
        return line
    host.stats.requests += 1
    ticket = host.admit(orjson.dumps(request["body"]), None)
    if isinstance(ticket, Reply):
        reply = ticket
    else:
        fault = host.draw_fault()
        if fault in _NO_ANSWER:
            code, message = _NO_ANSWER[fault]
            line["error"] = {"code": code, "message": message}
            return line
        reply = host.reply(ticket, fault)
    host.count_status(reply.status)
    line["response"] = {"status_code": reply.status, "request_id": ids.request(), "body": _body_of(reply)}
    return line


def _requests(source: Path, handle: IO[bytes]) -> Any:
    for number, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BatchInputError(f"{source}:{number}: not JSON ({exc})") from None
        if not isinstance(request, dict) or not isinstance(request.get("custom_id"), str) \
                or not isinstance(request.get("body"), dict):
            raise BatchInputError(f"{source}:{number}: a batch line needs a string custom_id and a body object")
        yield request


def run_batch(config: SimulatorConfig, source: Path, output: Path, errors: Path | None = None,
              stats: SimulatorStats | None = None) -> BatchSummary:
    """Answer every line of ``source`` into ``output`` (failed lines into ``errors`` when given).

    Rate limits, keys and latency do not apply offline; faults do, drawn from ``config.seed``.
    """
    offline = dataclasses.replace(config, api_key=None, rpm=None, tpm=None, rpd=None, latency_ms=0.0,
                                  jitter_ms=0.0)
    offline.validate()
    host = Host(offline, stats if stats is not None else SimulatorStats())
    ids = _Ids(config.seed, vllm=config.profile == "vllm")
    summary = BatchSummary()
    with source.open("rb") as handle, open_output(output, flag="--output") as out, \
            open_output(errors, flag="--errors") if errors is not None else contextlib.nullcontext(out) as failed_out:
        for request in _requests(source, handle):
            line = answer_line(host, ids, request)
            summary.lines += 1
            ok = line["error"] is None and line["response"]["status_code"] == 200
            summary.succeeded += ok
            summary.failed += not ok
            (out if ok else failed_out).write(orjson.dumps(line) + b"\n")
    return summary
