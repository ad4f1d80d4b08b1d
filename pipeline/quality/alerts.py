"""Alerts that reach a person when a run ends with any exit code but 0: a webhook POST and/or a command.

The summary is one JSON object: a Slack/Teams-compatible ``text`` (one line a person reads in a
channel) plus ``exit_code``, ``outcome``, ``out``, ``drift``, ``canaries``, ``cost`` and ``statuses``.
`alert_summary` is pure; `post_webhook` and `run_command` carry it out. A failing alert is retried
(the webhook) and then reported in one line: it never changes the run's outcome or exit code, and
the webhook URL (it may hold a token) and the command line are never printed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

__all__ = ["WEBHOOK_ATTEMPTS", "alert_summary", "post_webhook", "run_command"]

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0

#: what each exit code means, in the few words an alert starts with
_WHAT = {1: "some rows failed", 2: "usage, config, input or store error", 3: "stopped by the budget",
         4: "the endpoint refused the run", 5: "another run holds the output directory",
         6: "CANARIES WRONG", 7: "DRIFT", 70: "internal error (a bug)", 130: "interrupted"}


def alert_summary(*, exit_code: int, outcome: str, out: str, report: Mapping[str, Any] | None = None,
                  run_cost_usd: float = 0.0, max_cost: float | None = None, error: str | None = None) -> dict[str, Any]:
    """The alert's JSON body for a run that ended with ``exit_code``.

    >>> alert_summary(exit_code=3, outcome="budget_exhausted", out="out/n1", max_cost=5.0)["text"]
    'moderate: stopped by the budget (exit 3, budget_exhausted) in out/n1'
    """
    report = report or {}
    drift = report.get("drift") or {}
    canaries = report.get("canaries")
    statuses = report.get("statuses") or {}
    details = []
    if error:
        details.append(error)
    if canaries and canaries.get("wrong"):
        details.append(f"canaries wrong: {canaries['wrong']} of {canaries['total']}")
    if drift.get("flagged"):
        details.append(drift["flagged"])
    not_ok = {k: n for k, n in statuses.items() if k not in ("ok", "skipped_empty", "too_long") and n}
    if not_ok:
        details.append(" ".join(f"{k}={n:,}" for k, n in sorted(not_ok.items())))
    cost = {"run_usd": round(run_cost_usd, 6), "directory_usd": report.get("cost_usd"), "max_cost_usd": max_cost}
    if report.get("cost_usd") is not None:
        details.append(f"spent ${report['cost_usd']:.4f}" + (f" of a ${max_cost:g} cap" if max_cost else ""))
    text = f"moderate: {_WHAT.get(exit_code, 'ended')} (exit {exit_code}, {outcome}) in {out}"
    return {"text": text + ("; " + "; ".join(details) if details else ""), "exit_code": exit_code,
            "outcome": outcome, "out": out, "drift": drift or None, "canaries": canaries, "cost": cost,
            "statuses": statuses or None, "error": error}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would resend a POST as a bodiless GET (an alert nobody gets, counted
    as sent) and could carry it to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post_webhook(url: str, summary: Mapping[str, Any], *, attempts: int = WEBHOOK_ATTEMPTS,
                 timeout: float = WEBHOOK_TIMEOUT_S, sleep: Callable[[float], None] = time.sleep) -> str | None:
    """POST ``summary`` as JSON; None once a 2xx answer came, else why the last attempt failed (no URL in it).

    A 3xx answer (not followed) and a 4xx other than 408/429 are final (the hook is misconfigured);
    anything else is tried ``attempts`` times, 1 s then 2 s apart. Each attempt has ``timeout`` seconds in
    all, however slowly the hook trickles its answer.
    """
    body = orjson.dumps(summary, default=str)
    reason = "not sent"
    for attempt in range(attempts):
        if attempt:
            sleep(float(2 ** (attempt - 1)))
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "moderate"})
        try:
            _post_within(request, timeout)
            return None
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
            if 300 <= exc.code < 400:
                return f"{reason}, a redirect (not followed)"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                return reason
        except urllib.error.URLError as exc:
            inner = exc.reason
            reason = inner.strerror if isinstance(inner, OSError) and inner.strerror else type(inner).__name__
        except (OSError, ValueError) as exc:  # a timeout, a reset connection, a URL urllib cannot use
            reason = type(exc).__name__
    return f"{reason}, after {attempts} attempts" if attempts > 1 else reason


def _post_within(request: urllib.request.Request, timeout: float) -> None:
    """Send ``request``, raising what urlopen raises, or TimeoutError when it takes over ``timeout`` s in all.

    urlopen's timeout bounds each socket read, not the answer: a hook sending a byte every few seconds
    would hold the end of the run for hours. The attempt runs in a daemon thread that is left behind."""
    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            with _OPENER.open(request, timeout=timeout) as answer:
                answer.read(65536)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=attempt, name="moderate-webhook", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError
    if failure:
        raise failure[0]


def run_command(command: str, summary: Mapping[str, Any], *, timeout: float = COMMAND_TIMEOUT_S) -> str | None:
    """Run ``command`` (split like a shell, not run by one) with ``summary`` as JSON on stdin.

    None when it exited 0, else why not, naming only the program (its arguments may hold a token).
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return f"cannot split the command ({exc})"
    if not argv:
        return "empty command"
    program = Path(argv[0]).name
    try:
        # its output is not read: a child it leaves behind holding a pipe would keep us waiting past the
        # timeout; in a session of its own, the command and its children are stopped together
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        return f"{program}: not found"
    except PermissionError:
        return f"{program}: not executable"
    except OSError as exc:
        return f"{program}: {exc.strerror or type(exc).__name__}"
    try:
        process.communicate(orjson.dumps(summary, default=str) + b"\n", timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(process)
        return f"{program}: still running after {timeout:g} s (stopped)"
    return None if process.returncode == 0 else f"{program} exited {process.returncode}"


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):  # gone already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
