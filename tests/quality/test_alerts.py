"""Alerts: the JSON summary, a webhook over loopback (retries, final failures, no URL in messages), a command."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from pipeline.quality.alerts import alert_summary, post_webhook, run_command

SUMMARY = alert_summary(exit_code=7, outcome="finished", out="out/n2",
                        report={"cost_usd": 0.25, "statuses": {"ok": 9, "failed": 1},
                                "drift": {"flagged": "drift: spam 25.0% -> 100.0% (+75.0 pts vs 1 earlier runs)"},
                                "canaries": None}, run_cost_usd=0.1, max_cost=5.0)


class Hook:
    """A webhook receiver on 127.0.0.1 that answers each POST with the next status of ``statuses``."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.bodies = list(statuses), []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                status = hook.statuses.pop(0) if len(hook.statuses) > 1 else hook.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0/secret-token"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook(request: pytest.FixtureRequest) -> Iterator[Hook]:
    receiver = Hook(getattr(request, "param", [200]))
    yield receiver
    receiver.close()


def test_the_summary_says_what_happened_in_its_text_field() -> None:
    assert SUMMARY["text"] == ("moderate: DRIFT (exit 7, finished) in out/n2; drift: spam 25.0% -> 100.0% "
                               "(+75.0 pts vs 1 earlier runs); failed=1; spent $0.2500 of a $5 cap")
    assert SUMMARY["exit_code"] == 7 and SUMMARY["cost"] == {"run_usd": 0.1, "directory_usd": 0.25,
                                                             "max_cost_usd": 5.0}
    wrong = alert_summary(exit_code=6, outcome="finished", out="o",
                          report={"canaries": {"wrong": 2, "total": 8}, "statuses": {"ok": 3}})
    assert "CANARIES WRONG" in wrong["text"] and "canaries wrong: 2 of 8" in wrong["text"]
    refused = alert_summary(exit_code=2, outcome="not_started", out="o", error="data.csv: not found")
    assert refused["text"].endswith("; data.csv: not found") and refused["error"] == "data.csv: not found"


def test_a_webhook_gets_one_json_post(hook: Hook) -> None:
    assert post_webhook(hook.url, SUMMARY, sleep=lambda s: None) is None
    (body,) = hook.bodies
    assert orjson.loads(body)["text"].startswith("moderate: DRIFT")


@pytest.mark.parametrize("hook", [[500, 503, 200]], indirect=True)
def test_a_failing_webhook_is_retried_until_it_answers(hook: Hook) -> None:
    waits: list[float] = []
    assert post_webhook(hook.url, SUMMARY, sleep=waits.append) is None
    assert len(hook.bodies) == 3 and waits == [1.0, 2.0]


@pytest.mark.parametrize("hook", [[500]], indirect=True)
def test_a_webhook_failing_every_time_gives_a_reason_without_the_url(hook: Hook) -> None:
    reason = post_webhook(hook.url, SUMMARY, sleep=lambda s: None)
    assert reason == "HTTP 500, after 3 attempts" and len(hook.bodies) == 3


@pytest.mark.parametrize("hook", [[404]], indirect=True)
def test_a_webhook_that_does_not_exist_is_not_retried(hook: Hook) -> None:
    assert post_webhook(hook.url, SUMMARY, sleep=lambda s: None) == "HTTP 404" and len(hook.bodies) == 1


def test_a_webhook_nobody_listens_on_fails_in_words_without_the_url() -> None:
    reason = post_webhook("http://127.0.0.1:9/hooks/secret-token", SUMMARY, attempts=2, timeout=2,
                          sleep=lambda s: None)
    assert reason is not None and "secret-token" not in reason and "127.0.0.1" not in reason


def test_a_command_gets_the_summary_on_stdin(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    script = f"import sys; open({str(seen)!r}, 'wb').write(sys.stdin.buffer.read())"
    assert run_command(f"{sys.executable} -c {script!r}", SUMMARY) is None
    assert orjson.loads(seen.read_bytes())["exit_code"] == 7


def test_a_failing_command_names_the_program_only(tmp_path: Path) -> None:
    assert run_command(f"{sys.executable} -c 'import sys; sys.exit(3)' --token s3cret", SUMMARY) == \
        f"{Path(sys.executable).name} exited 3"
    assert run_command("/nonexistent/alert --token s3cret", SUMMARY) == "alert: not found"
    assert run_command("alert 'unbalanced", SUMMARY).startswith("cannot split")


class Redirecting(BaseHTTPRequestHandler):
    """A hook that moved: 302 to a page that answers a GET with 200 (what urllib would resend the POST as)."""

    def do_POST(self) -> None:
        self.send_response(302)
        self.send_header("Location", "/moved")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_a_webhook_that_redirects_is_a_failure_not_a_get_counted_as_sent() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
        assert post_webhook(url, SUMMARY, sleep=lambda s: None) == "HTTP 302, a redirect (not followed)"
    finally:
        server.shutdown()
        server.server_close()


def test_a_webhook_that_trickles_its_answer_is_given_up_after_the_timeout_in_all() -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def trickle() -> None:  # reads the request, then sends a header byte every 0.1 s for up to 20 s
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
                if done.wait(0.1):
                    return
                conn.sendall(bytes([byte]))

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    try:
        reason = post_webhook(f"http://127.0.0.1:{listener.getsockname()[1]}/h", SUMMARY, attempts=1, timeout=0.5)
    finally:
        done.set()
        listener.close()
    assert reason == "TimeoutError" and time.monotonic() - started < 3


def test_a_command_that_times_out_is_stopped_with_the_children_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    reason = run_command(f"sh -c 'sleep 30 & echo $! > {pid_file}; wait'", SUMMARY, timeout=0.5)
    assert reason == "sh: still running after 0.5 s (stopped)" and time.monotonic() - started < 5
    child = Path(f"/proc/{pid_file.read_text().strip()}/stat")
    deadline = time.monotonic() + 3
    while child.exists() and child.read_text().split(") ")[-1][0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not child.exists() or child.read_text().split(") ")[-1][0] == "Z"  # gone, or dead and not yet reaped


def test_a_command_that_never_reads_its_stdin_is_not_waited_on() -> None:
    big = {**SUMMARY, "error": "x" * 300_000}  # more than a pipe holds
    assert run_command("true", big) is None
    assert run_command("sleep 30", big, timeout=0.5) == "sleep: still running after 0.5 s (stopped)"
