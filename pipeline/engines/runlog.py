"""What a run says on stderr: lines for people, or one JSON object per event (``--log-format json``).

Events: ``start``, ``progress`` (every ``log_interval`` seconds), ``pause``, ``warning``, ``error``
and ``finish`` (the summary, with canaries, drift and sample figures). Each JSON object has
``time`` (UTC, ISO 8601), ``event`` and ``message`` (the line a person would read), plus fields
of its own. The API key and any user:password in a URL are removed from everything written.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import orjson

from pipeline.call.redact import Redactor

__all__ = ["JsonProgress", "LineStream", "LineWriter", "RunLog"]

_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


class RunLog:
    def __init__(self, stream: TextIO | None = None, *, fmt: str = "text", secret: str | Sequence[str] | None = None,
                 clock: Callable[[], float] = time.time,
                 listener: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.json = fmt == "json"
        #: called with every event as a dict (``event``, ``message`` for lines, and the event's fields)
        self.listener = listener
        #: every key of the run (one per endpoint of [[endpoints]]) is kept out of what is written
        keys = [secret] if isinstance(secret, str) or secret is None else list(secret)
        self._redactors = [Redactor(key) for key in dict.fromkeys(keys)] or [Redactor(None)]
        self._clock = clock

    def say(self, event: str, message: str, **fields: Any) -> None:
        """One line for people, or one JSON object carrying the same line and ``fields``."""
        if self.listener is not None:
            self._tell({"event": event, "message": message, **fields})
        if self.json:
            self._write_json(event, message=message, **fields)
        else:
            print(self._clean(message), file=self.stream, flush=True)

    def event(self, event: str, **fields: Any) -> None:
        """A JSON object for machines; nothing in text mode (people get `say` lines)."""
        if self.listener is not None:
            self._tell({"event": event, **fields})
        if self.json:
            self._write_json(event, **fields)

    def _write_json(self, event: str, **fields: Any) -> None:
        now = self._clock()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        line = orjson.dumps({"time": stamp, "event": event, **fields}, default=str,
                            option=orjson.OPT_NON_STR_KEYS).decode()
        self.stream.write(self._clean(line) + "\n")
        self.stream.flush()

    def _tell(self, fields: dict[str, Any]) -> None:
        """Hand an event to the listener; a listener that fails is dropped, never the run (paid calls go on)."""
        assert self.listener is not None
        try:
            self.listener({k: self._clean(v) if isinstance(v, str) else v for k, v in fields.items()})
        except Exception as exc:
            self.listener = None
            logging.getLogger("pipeline").warning("on_event raised %s: %s; no more events are sent to it",
                                                  type(exc).__name__, self._clean(str(exc)))

    def _clean(self, text: str) -> str:
        for redactor in self._redactors:
            text = redactor.text(text)
        return _URL_CREDENTIALS.sub("[redacted]@", text)

    def clean(self, value: Any) -> Any:
        """``value`` with the key and URL credentials removed from every string in it (dicts, lists)."""
        if isinstance(value, str):
            return self._clean(value)
        if isinstance(value, dict):
            return {k: self.clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.clean(v) for v in value]
        return value


class JsonProgress:
    """The run's progress as ``progress`` events, at most one per ``interval`` seconds (and a last one).

    Has the interface of `pipeline.engines.progress.Progress`, so the runner updates either the same way.
    """

    def __init__(self, log: RunLog, *, total: int | None, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.total, self.interval, self._clock = log, total, interval, clock
        self._started = self._last = clock()
        self._state: tuple[int, int, float] = (0, 0, 0.0)

    def update(self, *, done: int, tokens: int, cost_usd: float) -> None:
        self._state = (done, tokens, cost_usd)
        if self._clock() - self._last >= self.interval:
            self._emit()

    def close(self) -> None:
        pass

    def _emit(self) -> None:
        now = self._clock()
        self._last = now
        done, tokens, cost = self._state
        elapsed = now - self._started
        self.log.event("progress", labels=done, total_labels=self.total, tokens=tokens, cost_usd=round(cost, 8),
                       elapsed_s=round(elapsed, 1), labels_per_s=round(done / elapsed, 2) if elapsed > 0 else None)


class LineWriter:
    """A text stream that hands each complete, non-empty line it is written to `line` (never a terminal)."""

    def __init__(self) -> None:
        self._pending = ""

    def line(self, text: str) -> None:
        raise NotImplementedError

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if line:
                self.line(line)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class LineStream(LineWriter):
    """A text stream whose lines become `RunLog.say` events (for code that prints to a stream)."""

    def __init__(self, log: RunLog, event: str = "notice") -> None:
        super().__init__()
        self.log, self.event = log, event

    def line(self, text: str) -> None:
        self.log.say(self.event, text)
