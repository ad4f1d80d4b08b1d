"""A night's end reaches a person: drift exits 7 and the webhook gets one POST saying so; a webhook that
fails never changes the exit code and its URL is never printed; plain progress lines off a terminal."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from aiohttp import web
from support import make_config, run_pipeline, serve_app, write_jsonl

from pipeline.core import exitcodes
from pipeline.engines.local.app import run_job_async
from pipeline.simulator import SimulatorConfig, start_simulator

FAST = SimulatorConfig(latency_ms=1, jitter_ms=1)
SPAM = "buy now and click here for free money"
BENIGN = "see you at the meetup on friday"


def night(tmp_path: Path, name: str, spam_share: float, rows: int = 80) -> Path:
    every = round(1 / spam_share) if spam_share < 1 else 1
    texts = [f"{SPAM if i % every == 0 else BENIGN} {name} {i}" for i in range(rows)]
    return write_jsonl(tmp_path / f"{name}.jsonl", [{"id": f"{name}-{i}", "text": t} for i, t in enumerate(texts)])


async def with_hook(status: int, job: object) -> tuple[object, list[dict]]:
    posts: list[dict] = []

    async def receive(request: web.Request) -> web.Response:
        posts.append(await request.json())
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hooks/{token}", receive)
    async with serve_app(app) as root:
        result = await asyncio.to_thread(job, f"{root}/hooks/tok-e9f1c2")  # type: ignore[operator]
    return result, posts


def test_a_night_whose_violation_rate_jumps_exits_7_and_the_webhook_hears_drift(tmp_path: Path) -> None:
    store = str(tmp_path / "shared.sqlite")
    first = run_pipeline(make_config(tmp_path, [night(tmp_path, "n1", 0.25)], policies=["spam"], store=store,
                                     out=str(tmp_path / "n1")), FAST)
    assert first.code == exitcodes.EXIT_OK, first.stderr

    def second_night(url: str) -> object:
        return run_pipeline(make_config(tmp_path, [night(tmp_path, "n2", 1.0)], policies=["spam"], store=store,
                                        out=str(tmp_path / "n2"), alert_webhook=url), FAST)

    second, posts = asyncio.run(with_hook(200, second_night))
    assert second.code == exitcodes.EXIT_DRIFT == 7, second.stderr
    (post,) = posts
    assert post["exit_code"] == 7 and post["outcome"] == "finished" and post["out"] == str(tmp_path / "n2")
    assert post["text"].startswith("moderate: DRIFT (exit 7") and "spam 25.0% -> 100.0%" in post["text"]
    assert post["drift"]["policies"][0]["flagged"] and post["cost"]["directory_usd"] > 0
    assert "alert sent to the webhook" in second.stderr and "tok-e9f1c2" not in second.stderr


def test_drift_off_exits_0_and_sends_no_alert(tmp_path: Path) -> None:
    store = str(tmp_path / "shared.sqlite")
    run_pipeline(make_config(tmp_path, [night(tmp_path, "n1", 0.25)], policies=["spam"], store=store,
                             out=str(tmp_path / "n1")), FAST)

    def second_night(url: str) -> object:
        return run_pipeline(make_config(tmp_path, [night(tmp_path, "n2", 1.0)], policies=["spam"], store=store,
                                        out=str(tmp_path / "n2"), alert_webhook=url, drift_threshold="off"), FAST)

    second, posts = asyncio.run(with_hook(200, second_night))
    assert second.code == exitcodes.EXIT_OK and posts == [] and "DRIFT" not in second.stderr
    assert second.report()["drift"]["off"] is True


def test_reruns_and_resumes_of_one_night_are_not_extra_earlier_nights(tmp_path: Path) -> None:
    store = str(tmp_path / "shared.sqlite")
    calm = night(tmp_path, "n1", 0.25)
    codes = [run_pipeline(make_config(tmp_path, [calm], policies=["spam"], store=store, out=str(tmp_path / "n1"),
                                      max_cost=budget, shard_rows=20), FAST).code
             for budget in (0.0004, None, None)]  # stopped by its budget, resumed, rerun with nothing to do
    assert codes == [exitcodes.EXIT_BUDGET, exitcodes.EXIT_OK, exitcodes.EXIT_OK]
    second = run_pipeline(make_config(tmp_path, [night(tmp_path, "n2", 0.25)], policies=["spam"], store=store,
                                      out=str(tmp_path / "n2")), FAST)
    (policy,) = second.report()["drift"]["policies"]
    assert policy["runs"] == 1 and policy["baseline_labels"] == 80 and policy["labels"] == 80
    again = run_pipeline(make_config(tmp_path, [night(tmp_path, "n2", 0.25)], policies=["spam"], store=store,
                                     out=str(tmp_path / "n2")), FAST)
    assert "nothing to do" in again.stderr
    assert again.report()["drift"]["policies"][0]["runs"] == 1


@pytest.mark.slow
def test_a_failing_webhook_leaves_the_exit_code_and_never_prints_its_url(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "hello"}])

    def refused(url: str) -> object:  # a usage error: the canaries file is missing
        return run_pipeline(make_config(tmp_path, [rows], policies=["spam"], canaries=str(tmp_path / "nope.jsonl"),
                                        alert_webhook=url), FAST)

    result, posts = asyncio.run(with_hook(500, refused))
    assert result.code == exitcodes.EXIT_USAGE and len(posts) == 3
    assert posts[0]["outcome"] == "not_started" and "nope.jsonl" in posts[0]["text"]
    assert "the alert webhook failed (HTTP 500, after 3 attempts); the exit code stays 2" in result.stderr
    assert "tok-e9f1c2" not in result.stderr and "/hooks/" not in result.stderr


def test_a_clean_run_sends_no_alert(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "hello"}])

    def clean(url: str) -> object:
        return run_pipeline(make_config(tmp_path, [rows], policies=["spam"], alert_webhook=url), FAST)

    result, posts = asyncio.run(with_hook(200, clean))
    assert result.code == exitcodes.EXIT_OK and posts == []


@pytest.mark.slow
def test_text_mode_off_a_terminal_prints_a_progress_line_every_log_interval(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"hello {i}"} for i in range(30)])
    config = make_config(tmp_path, [rows], policies=["spam"], concurrency=2, log_interval=1.0)

    async def main() -> tuple[int, str]:
        async with start_simulator(SimulatorConfig(latency_ms=200, jitter_ms=0)) as server:
            config.base_url = server.base_url
            stream = io.StringIO()  # not a terminal
            return await run_job_async(config, stream=stream), stream.getvalue()

    code, err = asyncio.run(main())
    assert code == exitcodes.EXIT_OK
    lines = [line for line in err.splitlines() if line.startswith("moderate: progress: ")]
    assert len(lines) >= 2, err  # about 3 s of work
    assert " of 30 rows (" in lines[0] and "labels/s, ETA " in lines[0] and lines[0].endswith(" spent")
    assert not any("\r" in line for line in err.splitlines())


def test_the_alert_never_carries_the_api_key(tmp_path: Path) -> None:
    import sys

    from pipeline.config.settings import RunConfig
    from pipeline.engines.alerting import alert_after_error
    from pipeline.engines.runlog import RunLog

    key = "sk-live-0123456789abcdef"
    seen = tmp_path / "seen.json"
    script = f"import sys; open({str(seen)!r}, 'wb').write(sys.stdin.buffer.read())"
    config = RunConfig(out=f"https://user:{key}@bucket.example/out", alert_command=f"{sys.executable} -c {script!r}")
    stream = io.StringIO()
    alert_after_error(config, RunLog(stream, secret=key), exit_code=4, message=f"host said: bad key {key}")
    body = seen.read_text()
    assert key not in body and "[redacted]" in body and "alert command run" in stream.getvalue()
