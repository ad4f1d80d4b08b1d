"""`read_reply`: every documented host shape to an Attempt (and a Completion for billed answers)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.call.answers import MAX_PLAUSIBLE_TOKENS, Reading, decode_completion, read_reply
from pipeline.core.records import Usage
from pipeline.ratecontrol.decide import AttemptKind

NOW = 1_445_412_470.0  # Wed, 21 Oct 2015 07:27:50 GMT
FETCH_URL = "https://modelslab.com/api/v6/llm/fetch/8b5f"


def completion(message: Any, *, finish: Any = "stop", **extra: Any) -> bytes:
    data = {"id": "c1", "model": "served-model", "choices": [{"index": 0, "message": message,
                                                               "finish_reason": finish}], **extra}
    return orjson.dumps(data)


def read(status: int, body: bytes | dict, headers: dict[str, str] | None = None) -> Reading:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return read_reply(status, headers or {}, raw, now=NOW)


def kind(status: int, body: bytes | dict, headers: dict[str, str] | None = None) -> AttemptKind:
    return read(status, body, headers).attempt.kind


# ---- chat completions (OpenAI, vLLM, Groq, OpenRouter) -------------------------------------------


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_is_read_from_either_field(field: str) -> None:
    reading = read(200, completion({"role": "assistant", "content": "1", field: "thinking..."}))
    assert reading.attempt.kind is AttemptKind.ANSWER and reading.attempt.error is None
    done = reading.completion
    assert done is not None
    assert (done.content, done.reasoning, done.finish_reason, done.model) == ("1", "thinking...", "stop",
                                                                             "served-model")


def test_reasoning_field_wins_over_reasoning_content() -> None:
    done = decode_completion(completion({"content": "0", "reasoning": "new", "reasoning_content": "old"}))
    assert done.reasoning == "new"


def test_no_reasoning_is_none() -> None:
    assert decode_completion(completion({"content": "0"})).reasoning is None


def test_usage_with_details() -> None:
    usage = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
             "prompt_tokens_details": {"cached_tokens": 1024},
             "completion_tokens_details": {"reasoning_tokens": 250}}
    done = decode_completion(completion({"content": "0"}, usage=usage))
    assert done.usage == Usage(prompt_tokens=1200, cached_prompt_tokens=1024, completion_tokens=300,
                               reasoning_tokens=250)


def test_usage_without_details_as_vllm_sends_it() -> None:
    usage = {"prompt_tokens": 90, "completion_tokens": 40, "prompt_tokens_details": None}
    done = decode_completion(completion({"content": "0"}, usage=usage))
    assert done.usage == Usage(prompt_tokens=90, completion_tokens=40)
    assert done.usage.server_cost_usd is None


def test_missing_usage_is_none_for_the_caller_to_estimate() -> None:
    assert decode_completion(completion({"content": "0"})).usage is None
    assert decode_completion(completion({"content": "0"}, usage=None)).usage is None


def test_openrouter_cost_and_provider_are_kept() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.0000123}
    done = decode_completion(completion({"content": "0"}, usage=usage, provider="Groq"))
    assert done.usage is not None
    assert done.usage.server_cost_usd == pytest.approx(0.0000123)
    assert done.provider == "Groq"


def test_length_finish_with_empty_content_is_a_billed_answer_for_the_caller_to_judge() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": ""}, "finish_reason": "length"}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 4096}})
    reading = read(200, body)
    assert reading.attempt.kind is AttemptKind.ANSWER
    done = reading.completion
    assert done is not None and (done.content, done.finish_reason, done.model) == ("", "length", None)
    assert done.usage is not None and done.usage.completion_tokens == 4096


def test_content_parts_are_joined() -> None:
    parts = [{"type": "text", "text": '{"violation": '}, {"type": "image_url", "image_url": "x"},
             {"type": "output_text", "text": "1"}, "}"]
    done = decode_completion(completion({"content": parts}))
    assert done.content == '{"violation": 1}'


def test_2xx_other_than_200_is_read_as_a_completion() -> None:
    assert kind(201, completion({"content": "0"})) is AttemptKind.ANSWER


@pytest.mark.parametrize(
    "body",
    [
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        completion({"content": "0"})[:40],
        b'{"choices": []}',
        b'{"object": "chat.completion"}',
        b'{"choices": null}',
        b'{"choices": ["0"]}',
        b"[1, 2]",
        b"upstream busy, please try again later",
        b"",
    ],
    ids=["html", "truncated", "no-choices", "no-choices-key", "null-choices", "string-choice", "list",
         "plain-text", "empty"],
)
def test_200_that_is_not_a_chat_completion_is_a_failure(body: bytes) -> None:
    reading = read(200, body)
    assert reading.attempt.kind is AttemptKind.FAILED
    assert reading.completion is None
    assert reading.attempt.error is not None and "\n" not in reading.attempt.error
    with pytest.raises(ValueError):
        decode_completion(body)


def test_failure_quotes_the_start_of_the_body_on_one_line() -> None:
    error = read(200, b"<html>\n<title>502 Bad Gateway</title>\n</html>").attempt.error
    assert error is not None and "502 Bad Gateway" in error and "\n" not in error


# ---- every answer the host produced is billed and read, whatever is odd about it ---------------------


USAGE = {"prompt_tokens": 100, "completion_tokens": 20}


@pytest.mark.parametrize(
    ("body", "note"),
    [
        (completion({"content": "0"}, finish=1), "finish_reason 1 dropped"),
        (completion({"content": "0"}).replace(b'"served-model"', b"42"), "model 42 dropped"),
        (completion({"content": "0"}, usage={**USAGE, "completion_tokens_details": {"reasoning_tokens": -3}}),
         "reasoning_tokens -3 dropped"),
        (completion({"content": "0"}, usage={**USAGE, "completion_tokens_details": {"reasoning_tokens": 21}}),
         "reasoning_tokens 21 dropped"),
        (completion({"content": "0"}, usage={**USAGE, "prompt_tokens_details": {"cached_tokens": 101}}),
         "cached_tokens 101 dropped"),
        (completion({"content": [{"type": "text", "text": "0"}]},
                    usage={**USAGE, "prompt_tokens_details": {"cached_tokens": 164}}), "cached_tokens 164 dropped"),
        (completion({"content": "0"}, usage={**USAGE, "prompt_tokens_details": [1]}),
         "prompt_tokens_details not an object"),
        (completion({"content": "0"}, usage={**USAGE, "cost": -0.5}), "cost -0.5 dropped"),
    ],
    ids=["finish-int", "model-int", "reasoning-negative", "reasoning-over-completion", "cached-over-prompt",
         "content-parts-cached-over-prompt", "details-list", "negative-cost"],
)
def test_a_verdict_with_one_odd_detail_is_an_answer_billed_as_sent_with_the_detail_dropped_and_noted(
        body: bytes, note: str) -> None:
    reading = read(200, body)
    assert reading.attempt.kind is AttemptKind.ANSWER
    assert reading.attempt.error is not None and note in reading.attempt.error
    done = reading.completion
    assert done is not None and done.content == "0" and done.finish_reason in ("stop", None)
    assert done.model in ("served-model", None)
    if "usage" in orjson.loads(body):
        assert done.usage is not None
        assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (100, 20)
        assert done.usage.cached_prompt_tokens == 0 and done.usage.reasoning_tokens == 0
        assert done.usage.server_cost_usd is None


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": 3e9, "completion_tokens": 5}, {"prompt_tokens": MAX_PLAUSIBLE_TOKENS + 1},
     {"prompt_tokens": 10, "completion_tokens": -1}, {"prompt_tokens": 10.5}, {"prompt_tokens": "many"},
     {"prompt_tokens": True}, [1, 2]],
    ids=["prompt-3e9", "prompt-over-max", "negative", "fraction", "string-count", "bool-count", "usage-list"],
)
def test_a_verdict_with_implausible_usage_totals_is_an_answer_whose_usage_is_left_to_the_estimate(usage: Any) -> None:
    reading = read(200, completion({"content": "1"}, usage=usage))
    assert reading.attempt.kind is AttemptKind.ANSWER
    assert reading.attempt.error is not None and "usage" in reading.attempt.error
    assert reading.completion is not None and reading.completion.usage is None  # the caller estimates it


@pytest.mark.parametrize("message", [{"content": 7}, {"content": {"text": "0"}}, "0"],
                         ids=["content-int", "content-object", "message-string"])
def test_a_billed_answer_with_no_text_to_read_is_a_failure_that_keeps_its_bill(message: Any) -> None:
    reading = read(200, completion(message, usage=USAGE))
    assert reading.attempt.kind is AttemptKind.FAILED
    assert reading.attempt.error is not None and "implausible answer" in reading.attempt.error
    assert reading.completion is not None and reading.completion.content is None
    assert reading.completion.usage == Usage(100, 0, 20, 0)


def test_plausible_extremes_are_kept() -> None:
    done = decode_completion(completion({"content": "0"}, usage={"prompt_tokens": MAX_PLAUSIBLE_TOKENS,
                                                                 "completion_tokens": 0, "cost": 0}))
    assert done.usage is not None and done.usage.prompt_tokens == MAX_PLAUSIBLE_TOKENS
    assert done.usage.server_cost_usd == 0.0


# ---- OpenRouter ----------------------------------------------------------------------------------


def test_openrouter_choice_with_finish_reason_error_is_a_failure_with_the_message() -> None:
    body = orjson.dumps({"model": "m", "choices": [{"message": {"content": ""}, "finish_reason": "error",
                                                    "error": {"code": 502, "message": "upstream\ntimed out"}}]})
    attempt = read(200, body).attempt
    assert attempt.kind is AttemptKind.FAILED
    assert attempt.error == "upstream error: upstream timed out"


def test_openrouter_error_object_with_http_200_is_a_failure() -> None:
    attempt = read(200, {"error": {"code": 502, "message": "provider returned error"}}).attempt
    assert attempt.kind is AttemptKind.FAILED
    assert attempt.error == "upstream error: provider returned error"


def test_content_filter_with_empty_content_is_filtered_and_billed() -> None:
    reading = read(200, completion({"content": ""}, finish="content_filter",
                                   usage={"prompt_tokens": 10, "completion_tokens": 0}))
    assert reading.attempt.kind is AttemptKind.FILTERED
    assert reading.completion is not None and reading.completion.usage == Usage(prompt_tokens=10)


def test_content_filter_with_content_is_an_answer() -> None:
    assert kind(200, completion({"content": "1"}, finish="content_filter")) is AttemptKind.ANSWER


def test_402_with_retry_after_is_a_refusal_that_waits() -> None:
    attempt = read(402, {"error": {"message": "request exceeds in-flight budget"}}, {"Retry-After": "4"}).attempt
    assert (attempt.kind, attempt.retry_after) == (AttemptKind.REFUSED, 4.0)
    assert attempt.error == "HTTP 402: request exceeds in-flight budget"


def test_402_without_retry_after_stops_the_run() -> None:
    attempt = read(402, {"error": {"message": "Insufficient credits"}}).attempt
    assert attempt.kind is AttemptKind.FATAL
    assert attempt.error == "HTTP 402: Insufficient credits"


def _openrouter_cap(limit: str, reset_ms: int, message: str) -> dict:
    # the shape OpenRouter sends for its request caps (captured replies quoted in public bug reports)
    return {"error": {"message": message, "code": 429, "metadata": {
        "headers": {"X-RateLimit-Limit": limit, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset_ms)},
        "provider_name": None}}}


def test_openrouter_daily_cap_in_the_body_is_a_spent_quota_until_its_reset() -> None:
    midnight = 1_445_472_000  # the next 00:00 UTC after NOW
    body = _openrouter_cap("50", midnight * 1000, "Rate limit exceeded: free-models-per-day. Add 10 credits "
                                                  "to unlock 1000 free model requests per day")
    reading = read(429, body)
    assert reading.attempt.kind is AttemptKind.REFUSED
    assert reading.attempt.retry_after == pytest.approx(midnight - NOW)
    assert reading.attempt.quota_spent
    assert reading.headers is not None
    assert reading.headers["x-ratelimit-remaining-requests"] == "0"  # the rate rules see a spent quota


def test_openrouter_per_minute_cap_waits_for_its_reset_and_a_header_wins_over_the_body() -> None:
    body = _openrouter_cap("20", int((NOW + 12.5) * 1000), "Rate limit exceeded: limit_rpm/some-model")
    assert read(429, body).attempt.retry_after == pytest.approx(12.5)
    attempt = read(429, body, {"Retry-After": "3"}).attempt
    assert (attempt.retry_after, attempt.quota_spent) == (3.0, True)


@pytest.mark.parametrize("metadata", [None, "headers", {"headers": ["x"]}, {"headers": {"X-RateLimit-Reset": True}},
                                      {"headers": {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "soon"}}])
def test_odd_body_metadata_is_no_quota(metadata: Any) -> None:
    attempt = read(429, {"error": {"message": "busy", "metadata": metadata}}).attempt
    assert (attempt.kind, attempt.retry_after, attempt.quota_spent) == (AttemptKind.REFUSED, None, False)


def test_a_long_retry_after_beside_a_quota_back_in_moments_is_no_spent_quota() -> None:
    # the spent token quota does not explain an hour's wait: no reason to stop the run on it
    headers = {"Retry-After": "3600", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "5s"}
    attempt = read(429, {"error": {"message": "slow down"}}, headers).attempt
    assert (attempt.retry_after, attempt.quota_spent) == (3600.0, False)


def test_groq_requests_spent_for_hours_with_a_short_retry_after_is_a_spent_quota_of_a_short_wait() -> None:
    headers = {"retry-after": "2", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2h59m56s"}
    attempt = read(429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}, headers).attempt
    assert (attempt.retry_after, attempt.quota_spent) == (2.0, True)  # decide: retried, the run goes on


def test_only_rate_limit_headers_among_the_first_of_a_body_are_read() -> None:
    repeated = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int((NOW + 20) * 1000)),
                "Content-Type": "text/x-junk", **{f"x-junk-{i}": "x" for i in range(10_000)},
                "retry-after-ms": "1"}  # past the entries looked at
    reading = read(429, {"error": {"message": "capped", "metadata": {"headers": repeated}}})
    assert reading.headers is not None
    assert set(reading.headers) == {"x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-remaining-requests",
                                    "x-ratelimit-reset-requests"}
    assert reading.attempt.retry_after == pytest.approx(20.0)


def test_a_429_with_quota_left_is_no_spent_quota() -> None:
    headers = {"x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "6h"}
    attempt = read(429, {"error": {"message": "busy upstream"}}, headers).attempt
    assert (attempt.retry_after, attempt.quota_spent) == (None, False)


# ---- ModelsLab -----------------------------------------------------------------------------------


def test_modelslab_bad_key_with_http_200_stops_the_run() -> None:
    attempt = read(200, {"status": "error", "message": "Invalid API key provided"}).attempt
    assert attempt.kind is AttemptKind.FATAL
    assert attempt.error == "host error (HTTP 200): Invalid API key provided"


@pytest.mark.parametrize("message", ["Insufficient credit balance", "Your subscription has expired",
                                     "Model not found"])
def test_modelslab_credit_subscription_or_model_errors_stop_the_run(message: str) -> None:
    assert kind(200, {"status": "error", "message": message}) is AttemptKind.FATAL


def test_modelslab_full_queue_waits_what_the_body_says() -> None:
    attempt = read(429, {"status": "error", "message": "Queue is full", "retry_after": 30},
                   {"Retry-After": "2"}).attempt
    assert (attempt.kind, attempt.retry_after) == (AttemptKind.REFUSED, 30.0)
    assert attempt.error == "host error (HTTP 429): Queue is full"


def test_modelslab_busy_words_with_http_200_are_a_refusal() -> None:
    attempt = read(200, {"status": "error", "messege": "Server busy, try again"}).attempt
    assert (attempt.kind, attempt.retry_after) == (AttemptKind.REFUSED, None)


def test_modelslab_processing_is_queued_with_its_poll_url_and_eta() -> None:
    attempt = read(200, {"status": "processing", "fetch_result": FETCH_URL, "eta": 12, "id": 8}).attempt
    assert (attempt.kind, attempt.poll_url, attempt.retry_after) == (AttemptKind.QUEUED, FETCH_URL, 12.0)


def test_modelslab_processing_with_future_links_list() -> None:
    attempt = read(200, {"status": "processing", "future_links": [FETCH_URL], "eta": "3.5"}).attempt
    assert (attempt.kind, attempt.poll_url, attempt.retry_after) == (AttemptKind.QUEUED, FETCH_URL, 3.5)


def test_modelslab_processing_without_a_url_is_a_failure() -> None:
    attempt = read(200, {"status": "processing", "eta": 5, "fetch_result": "ftp://x"}).attempt
    assert (attempt.kind, attempt.retry_after, attempt.poll_url) == (AttemptKind.FAILED, 5.0, None)


def test_modelslab_other_error_is_a_failure() -> None:
    attempt = read(200, {"status": "failed", "message": "generation failed"}).attempt
    assert attempt.kind is AttemptKind.FAILED


def test_modelslab_success_is_a_completion() -> None:
    body = orjson.loads(completion({"content": "1"}))
    body["status"] = "success"
    assert kind(200, body) is AttemptKind.ANSWER


# ---- error bodies --------------------------------------------------------------------------------


def test_error_message_from_openai_error_json() -> None:
    body = {"error": {"message": "Rate limit reached\nfor model x", "type": "rate_limit"}}
    assert read(429, body).attempt.error == "HTTP 429: Rate limit reached for model x"


def test_error_message_from_string_error() -> None:
    assert read(400, b'{"error": "bad request"}').attempt.error == "HTTP 400: bad request"


def test_vllm_error_object_message_is_shown() -> None:
    body = {"object": "error", "message": "This model's maximum context length is 8192 tokens",
            "type": "BadRequestError", "param": None, "code": 400}
    attempt = read(400, body).attempt
    assert attempt.kind is AttemptKind.ROW_ERROR
    assert attempt.error == "HTTP 400: This model's maximum context length is 8192 tokens"


def test_error_message_from_html_is_one_line() -> None:
    html = b"<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center>nginx</center>\n</body></html>"
    error = read(502, html).attempt.error
    assert error is not None and error.startswith("HTTP 502: ")
    assert "502 Bad Gateway" in error and "\n" not in error


def test_error_message_for_an_empty_body() -> None:
    assert read(503, b"").attempt.error == "HTTP 503: empty body"


def test_error_message_is_short() -> None:
    assert len(read(500, {"error": {"message": "x " * 1000}}).attempt.error or "") <= len("HTTP 500: ") + 200
    assert len(read(500, b"y" * 10_000).attempt.error or "") < 250


# ---- statuses ------------------------------------------------------------------------------------

A = AttemptKind


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (408, A.TIMEOUT), (409, A.FAILED), (425, A.FAILED), (429, A.REFUSED), (500, A.FAILED),
        (502, A.FAILED), (503, A.REFUSED), (529, A.FAILED), (400, A.ROW_ERROR), (413, A.ROW_ERROR),
        (422, A.ROW_ERROR), (405, A.ROW_ERROR), (418, A.ROW_ERROR), (401, A.FATAL), (402, A.FATAL),
        (403, A.FATAL), (404, A.FATAL), (302, A.FATAL), (100, A.FATAL),
        (600, A.FATAL),
    ],
)
def test_http_status_decides_the_kind(status: int, expected: AttemptKind) -> None:
    assert kind(status, {"error": {"message": "nope"}}) is expected


@pytest.mark.parametrize("status", [429, 503])
def test_refusal_carries_the_retry_after_header(status: int) -> None:
    assert read(status, b"", {"Retry-After": "7"}).attempt.retry_after == 7.0
    assert read(status, b"", {"retry-after-ms": "250"}).attempt.retry_after == 0.25
    assert read(status, b"", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}).attempt.retry_after == 10.0
    assert read(status, b"").attempt.retry_after is None


def test_server_error_carries_retry_after_too() -> None:
    attempt = read(500, b"", {"Retry-After": "3"}).attempt
    assert (attempt.kind, attempt.retry_after) == (AttemptKind.FAILED, 3.0)


def test_fatal_and_row_errors_carry_no_wait() -> None:
    assert read(401, b"", {"Retry-After": "3"}).attempt.retry_after is None
    assert read(400, b"", {"Retry-After": "3"}).attempt.retry_after is None
