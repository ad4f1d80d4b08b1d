"""The run log: lines for people, or one JSON object per event with no secret in it."""

from __future__ import annotations

import io

import orjson

from pipeline.engines.runlog import JsonProgress, LineStream, RunLog


def test_text_mode_prints_the_line_and_skips_machine_events() -> None:
    out = io.StringIO()
    log = RunLog(out)
    log.say("pause", "moderate: pausing", seconds=3)
    log.event("progress", labels=1)
    assert out.getvalue() == "moderate: pausing\n"


def test_json_mode_writes_one_object_per_event_with_time_and_fields() -> None:
    out = io.StringIO()
    log = RunLog(out, fmt="json", clock=lambda: 1_700_000_000.25)
    log.say("pause", "moderate: pausing for 3 s", seconds=3.0, reason="429")
    (event,) = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert event == {"time": "2023-11-14T22:13:20.250Z", "event": "pause", "message": "moderate: pausing for 3 s",
                     "seconds": 3.0, "reason": "429"}


def test_the_key_and_url_passwords_never_reach_the_log() -> None:
    for fmt in ("text", "json"):
        out = io.StringIO()
        log = RunLog(out, fmt=fmt, secret="sk-abcdefgh12345")
        log.say("error", "bad key sk-abcdefgh12345 for https://user:hunter2@host/v1", detail="sk-abcdefgh12345")
        assert "sk-abcdefgh12345" not in out.getvalue() and "hunter2" not in out.getvalue()
        assert "[redacted]" in out.getvalue()


def test_progress_events_come_at_most_once_per_interval() -> None:
    out, now = io.StringIO(), [0.0]
    progress = JsonProgress(RunLog(out, fmt="json"), total=100, interval=10.0, clock=lambda: now[0])
    for step in range(1, 31):
        now[0] = step
        progress.update(done=step, tokens=step * 10, cost_usd=step / 1000)
    events = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [e["labels"] for e in events] == [10, 20, 30]
    assert events[0]["total_labels"] == 100 and events[0]["labels_per_s"] == 1.0


def test_a_line_stream_turns_printed_lines_into_events() -> None:
    out = io.StringIO()
    stream = LineStream(RunLog(out, fmt="json"))
    print("moderate: using the built-in SIMULATOR", file=stream)  # type: ignore[arg-type]
    (event,) = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert event["event"] == "notice" and event["message"] == "moderate: using the built-in SIMULATOR"


def test_every_key_of_a_run_with_several_endpoints_is_kept_out_of_its_lines() -> None:
    import io

    stream = io.StringIO()
    log = RunLog(stream, secret=["sk-first-endpoint-1234", "sk-second-endpoint-5678"])
    log.say("error", "refused sk-first-endpoint-1234 and c2stc2Vjb25kLWVuZHBvaW50LTU2Nzg= and sk-second-endpoint-5678")
    assert "endpoint-" not in stream.getvalue() and "c2stc2Vjb25k" not in stream.getvalue()


def test_run_secrets_reads_the_key_of_every_endpoint(monkeypatch) -> None:
    from pipeline.config.settings import EndpointSpec, RunConfig, run_secrets

    monkeypatch.setenv("MODERATION_API_KEY", "sk-run-level-key-000")
    monkeypatch.setenv("OVERFLOW_KEY", "sk-overflow-key-111")
    config = RunConfig(endpoints=[EndpointSpec(name="pool", provider="vllm"),
                                  EndpointSpec(name="paid", provider="groq", api_key_env="OVERFLOW_KEY")])
    assert run_secrets(config) == ["sk-run-level-key-000", "sk-overflow-key-111"]
