"""Retry-After, retry-after-ms and x-ratelimit-* parsing (backoff: test_decide; statuses: test_answers)."""

from __future__ import annotations

import pytest

from pipeline.ratecontrol.headers import (
    RateLimitSnapshot,
    parse_duration,
    quota_headers,
    quota_spent,
    read_rate_limit_headers,
    retry_after_seconds,
)

NOW = 1_445_412_470.0  # Wed, 21 Oct 2015 07:27:50 GMT

# ---- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("250ms", 0.25),
        ("6m0s", 360.0),
        ("1m30.5s", 90.5),
        ("2h", 7200.0),
        ("1h2m3s", 3723.0),
        ("7.66s", 7.66),
        ("12", 12.0),
        ("0.5", 0.5),
        (" 3s ", 3.0),
        ("-2s", 0.0),
        ("-5", 0.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(value: str, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", " ", "s", "1x", "abc", "1 m", "m1", "nan", "inf", "1s2", "--1s", "1d"])
def test_parse_duration_garbage(value: str) -> None:
    assert parse_duration(value) is None


# ---- retry-after ---------------------------------------------------------------------------------


def test_retry_after_ms_wins() -> None:
    headers = {"retry-after-ms": "1500", "Retry-After": "9"}
    assert retry_after_seconds(headers, now=NOW) == 1.5


@pytest.mark.parametrize(("value", "seconds"), [("2", 2.0), ("0.25", 0.25), ("0", 0.0), ("-3", 0.0)])
def test_retry_after_delta_seconds(value: str, seconds: float) -> None:
    assert retry_after_seconds({"Retry-After": value}, now=NOW) == seconds


def test_retry_after_http_date_is_relative_to_now() -> None:
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=NOW) == 10.0
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"}, now=NOW) == 10.0


def test_retry_after_date_in_the_past_is_zero() -> None:
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:00:00 GMT"}, now=NOW) == 0.0


@pytest.mark.parametrize("name", ["retry-after", "RETRY-AFTER", "Retry-After", "rEtRy-AfTeR"])
def test_header_names_are_case_insensitive(name: str) -> None:
    assert retry_after_seconds({name: "4"}, now=NOW) == 4.0


def test_cimultidict_headers() -> None:
    multidict = pytest.importorskip("multidict")
    headers = multidict.CIMultiDict({"Retry-After": "3", "X-RateLimit-Remaining-Requests": "7"})
    assert retry_after_seconds(headers, now=NOW) == 3.0
    snapshot = read_rate_limit_headers(headers)
    assert snapshot is not None and snapshot.remaining_requests == 7


def test_garbage_retry_after_falls_through_to_the_next_source() -> None:
    headers = {
        "retry-after-ms": "soon",
        "Retry-After": "later",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
    }
    assert retry_after_seconds(headers, now=NOW) == 2.0


@pytest.mark.parametrize(
    "headers",
    [{}, {"Retry-After": "soon"}, {"retry-after-ms": "nan"}, {"Retry-After": "inf"}, {"content-type": "x"}],
)
def test_nothing_usable_is_none(headers: dict[str, str]) -> None:
    assert retry_after_seconds(headers, now=NOW) is None


def test_ratelimit_reset_only_counts_when_that_quota_is_spent() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m30.5s",
    }
    assert retry_after_seconds(headers, now=NOW) == 90.5
    headers["x-ratelimit-remaining-tokens"] = "5"
    assert retry_after_seconds(headers, now=NOW) is None


def test_ratelimit_reset_takes_the_largest_spent_quota() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "250ms",
    }
    assert retry_after_seconds(headers, now=NOW) == 360.0


def test_ratelimit_reset_garbage_is_none() -> None:
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "whenever"}
    assert retry_after_seconds(headers, now=NOW) is None


# ---- snapshot ------------------------------------------------------------------------------------


def test_snapshot_of_openai_style_headers() -> None:
    headers = {
        "X-RateLimit-Limit-Requests": "60",
        "X-RateLimit-Remaining-Requests": "59",
        "X-RateLimit-Reset-Requests": "1s",
        "X-RateLimit-Limit-Tokens": "150000",
        "X-RateLimit-Remaining-Tokens": "149984",
        "X-RateLimit-Reset-Tokens": "6m0s",
    }
    assert read_rate_limit_headers(headers) == RateLimitSnapshot(60, 59, 1.0, 150000, 149984, 360.0)


def test_snapshot_with_some_headers_missing_or_broken() -> None:
    headers = {"x-ratelimit-remaining-tokens": "100", "x-ratelimit-limit-tokens": "lots"}
    assert read_rate_limit_headers(headers) == RateLimitSnapshot(remaining_tokens=100)


def test_no_ratelimit_headers_is_none() -> None:
    assert read_rate_limit_headers({"content-type": "application/json", "Retry-After": "1"}) is None
    assert read_rate_limit_headers({"x-ratelimit-limit-requests": "??"}) is None


# ---- quota_headers / quota_spent: OpenRouter's unsuffixed caps, and caps repeated in the body ------


@pytest.mark.parametrize(("reset", "seconds"), [
    (str(int((NOW + 30) * 1000)), 30.0),  # Unix time in ms (OpenRouter)
    (str(int(NOW + 30)), 30.0),  # Unix time in s
    (str(int((NOW - 5) * 1000)), 0.0),  # already passed
    ("45", 45.0), ("1m30s", 90.0),  # durations
])
def test_unsuffixed_reset_becomes_the_request_quotas_seconds(reset: str, seconds: float) -> None:
    h = quota_headers({"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}, now=NOW)
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("20", "0")
    assert parse_duration(h["x-ratelimit-reset-requests"]) == pytest.approx(seconds)
    assert quota_spent(h)
    assert retry_after_seconds(h, now=NOW) == pytest.approx(seconds)


def test_suffixed_headers_win_over_unsuffixed_and_the_reply_over_its_body() -> None:
    h = quota_headers({"x-ratelimit-remaining-requests": "7", "X-RateLimit-Remaining": "0"}, now=NOW,
                      body_headers={"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset": "9"})
    assert h["x-ratelimit-remaining-requests"] == "7"
    assert h["x-ratelimit-reset-requests"] == "9"  # only the body said it
    assert not quota_spent(h)


@pytest.mark.parametrize("body", [None, "x", ["a"], {"X-RateLimit-Reset": None}, {"X-RateLimit-Reset": True},
                                  {1: "2"}, {"X-RateLimit-Reset": {"ms": 1}}])
def test_body_headers_that_are_not_plain_values_are_ignored(body: object) -> None:
    h = quota_headers({"Retry-After": "2"}, now=NOW, body_headers=body)
    assert h == {"retry-after": "2"}


@pytest.mark.parametrize("reset", ["soon", "", "-", "nan", "inf"])
def test_an_unreadable_unsuffixed_reset_is_dropped(reset: str) -> None:
    h = quota_headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}, now=NOW)
    assert "x-ratelimit-reset-requests" not in h
    assert not quota_spent(h)


def test_a_spent_token_quota_counts_too() -> None:
    assert quota_spent({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2s"})
    assert not quota_spent({"x-ratelimit-remaining-tokens": "0"})  # no reset: no statement of when


def test_a_spent_quota_counts_only_when_it_lasts_as_long_as_asked() -> None:
    tokens = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "5s"}
    assert not quota_spent(tokens, lasting=3600.0)
    assert quota_spent(tokens, lasting=6.0)  # a Retry-After rounded up to whole seconds
    both = {**tokens, "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2h"}
    assert quota_spent(both, lasting=3600.0)
