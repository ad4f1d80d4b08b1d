"""Batch line formats: custom ids, request lines, result lines of every host, size limits."""

from __future__ import annotations

import orjson
import pytest

from pipeline.engines.batchfiles.lines import (
    MAX_CUSTOM_ID,
    BatchLineError,
    custom_id,
    parse_custom_id,
    parse_result_line,
    parse_size,
    request_line,
)

FP = bytes(range(16))
COMPLETION = {"id": "c1", "object": "chat.completion", "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "1"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}


def test_custom_id_maps_back_to_fingerprint_and_policy_within_64_characters() -> None:
    value = custom_id(FP, 9)
    assert len(value) <= MAX_CUSTOM_ID
    assert parse_custom_id(value) == (FP, 9)


@pytest.mark.parametrize("value", ["request-1", "", None, 12, "0" * 32, "g" * 32 + "-1"])
def test_custom_ids_of_someone_else_are_refused(value: object) -> None:
    with pytest.raises(BatchLineError, match="not written by 'moderate batch prepare'"):
        parse_custom_id(value)


def test_request_line_keeps_the_body_bytes_as_they_are() -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"caf\xc3\xa9 \\u2028"}]}'
    line = request_line("abc-0", body)
    assert line.endswith(b"}\n") and body in line
    parsed = orjson.loads(line)
    assert parsed == {"custom_id": "abc-0", "method": "POST", "url": "/v1/chat/completions",
                      "body": orjson.loads(body)}


def test_vllm_and_openai_success_lines_read_the_same() -> None:
    vllm = {"id": "vllm-1", "custom_id": "x", "response": {"status_code": 200, "request_id": "r", "body": COMPLETION},
            "error": None}
    result = parse_result_line(orjson.dumps(vllm))
    assert (result.custom_id, result.status_code, result.error) == ("x", 200, None)
    assert result.body == COMPLETION


def test_a_body_sent_as_a_json_string_is_decoded() -> None:
    line = {"custom_id": "x", "response": {"status_code": 200, "body": orjson.dumps(COMPLETION).decode()}}
    assert parse_result_line(orjson.dumps(line)).body == COMPLETION


def test_error_file_lines_and_http_errors_become_one_line_errors() -> None:
    expired = {"custom_id": "x", "response": None, "error": {"code": "batch_expired", "message": "not done in 24h"}}
    assert parse_result_line(orjson.dumps(expired)).error == "batch_expired: not done in 24h"
    refused = {"custom_id": "x", "response": {"status_code": 400, "body": {"error": {"message": "too\nlong"}}},
               "error": None}
    result = parse_result_line(orjson.dumps(refused))
    assert result.status_code == 400 and result.error == "HTTP 400: too long"
    assert parse_result_line(b'{"custom_id": "x"}').error == "no response"


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'{"response": {}}'])
def test_unreadable_result_lines_are_refused(raw: bytes) -> None:
    with pytest.raises(BatchLineError):
        parse_result_line(raw)


@pytest.mark.parametrize(("text", "size"), [("100MB", 100_000_000), ("200MiB", 200 * 2**20), ("1.5 GB", 1_500_000_000),
                                            ("4096", 4096), ("8kb", 8000)])
def test_sizes_read_in_decimal_and_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_size_without_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
