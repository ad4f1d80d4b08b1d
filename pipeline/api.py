"""The library: what a notebook, an orchestrator task or a script calls. `moderate` is a thin layer over it.

>>> import pipeline
>>> config = pipeline.load_config("configs/demo.toml", out="out/notebook", limit=20)
>>> result = pipeline.run(config)
>>> result.outcome, len(result.labels())
('finished', 80)

The library prints nothing to stdout and never exits the process: a run's lines go to the ``pipeline``
logger (or to ``on_event``), a user's mistake raises `pipeline.UserError`, and how the run ended is
in the returned `RunResult` (``outcome``, ``exit_code``, ``cost_usd``, ``labels()``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from pipeline.call.client import Transport
from pipeline.config import load
from pipeline.config.rules import ConfigError, validate
from pipeline.config.settings import RunConfig, run_secrets
from pipeline.core import exitcodes
from pipeline.engines.local.app import run_local
from pipeline.engines.runlog import LineWriter, RunLog
from pipeline.engines.runstate import RunStats
from pipeline.output import open_output_dir

__all__ = ["RunResult", "load_config", "run", "run_async"]

logger = logging.getLogger("pipeline")

#: ``run`` flags whose long names differ from the config field they set
_FLAG_FIELDS = {"input": "inputs", "policy": "policies"}
_LIST_FIELDS = {"inputs", "policies", "keep_columns"}
#: ``run`` flags that are not settings of the run: where the library takes them instead
_NOT_SETTINGS = {"engine": "pass engine= to pipeline.run", "preflight": "call pipeline.check(config) first",
                 "no_progress": "the library draws no progress bar (progress comes as on_event events)",
                 "ray_address": "the library's Ray runs start Ray on this machine; use `moderate run --engine ray`",
                 "ray_actors": "the library's Ray runs use the cluster's CPUs; use `moderate run --engine ray`"}
#: how an engine that reports only an exit code ended
_OUTCOMES = {exitcodes.EXIT_OK: "finished", exitcodes.EXIT_ROWS_FAILED: "finished",
             exitcodes.EXIT_CANARY: "finished", exitcodes.EXIT_BUDGET: "budget_exhausted",
             exitcodes.EXIT_ENDPOINT: "aborted", exitcodes.EXIT_INTERRUPTED: "interrupted",
             exitcodes.EXIT_INTERNAL: "failed", exitcodes.EXIT_USAGE: "write_failed"}

Event = dict[str, Any]


def load_config(path: str | os.PathLike[str] | None = None, /, **overrides: Any) -> RunConfig:
    """A checked `RunConfig` from a TOML file (or the defaults) with ``overrides`` laid over it.

    Overrides use the ``run`` flags' long names with underscores (``input``, ``policy``, ``out``,
    ``base_url``, ``provider``, ``max_cost``, ...); a repeatable flag takes a list (a single value is
    fine too). Provider presets (model id, concurrency) and every value check apply here, as for the CLI.
    Raises `pipeline.ConfigError` (a `UserError`) naming the file or key.

    >>> load_config(provider="modelslab").model
    'openai-gpt-oss-safeguard-20b'
    """
    config = load.load_config(path)
    known = {f.name for f in dataclasses.fields(RunConfig)} - {"source", "preset"}
    values: dict[str, Any] = {}
    for name, value in overrides.items():
        field_name = _FLAG_FIELDS.get(name, name)
        if name in _NOT_SETTINGS:
            raise ConfigError(f"load_config: {name!r} is not a setting of the run: {_NOT_SETTINGS[name]}")
        if field_name not in known:
            raise ConfigError(f"load_config: unknown setting {name!r}")
        if field_name in _LIST_FIELDS and isinstance(value, str | os.PathLike):
            value = [value]
        if field_name in _LIST_FIELDS and value is not None:
            value = [os.fspath(v) for v in value]
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        values[field_name] = value
    return load.apply_overrides(config, values)


@dataclass(slots=True)
class RunResult:
    """How a run ended and where its labels are.

    ``outcome``: ``finished``, ``nothing_to_do`` (the folder was complete), ``interrupted``,
    ``budget_exhausted``, ``aborted`` (the endpoint refused the run), ``write_failed`` or ``failed`` (a bug).
    ``exit_code`` is what ``moderate run`` would exit with (docs/output.md).
    """

    outcome: str
    exit_code: int
    out: str
    #: dollars this run charged; the whole folder's spend (reruns added up) is ``report["cost_usd"]``
    cost_usd: float
    stats: RunStats | None = None
    #: the folder's cost report, as in ``OUT/cost_report.json``
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every row labelled with a usable verdict (exit code 0)."""
        return self.exit_code == exitcodes.EXIT_OK

    def label_files(self) -> list[str]:
        """The label shards of the output folder, in order."""
        return [str(f) for f in open_output_dir(self.out).shard_files()]

    def scan_labels(self) -> pl.LazyFrame:
        """The labels as a lazy polars frame: one row per (input row, policy)."""
        files = self.label_files()
        return pl.scan_parquet(files) if files else pl.LazyFrame()

    def labels(self) -> pl.DataFrame:
        """The labels: one row per (input row, policy), failures included with their status."""
        return self.scan_labels().collect()


def run(config: RunConfig, *, data: Any = None, engine: Literal["local", "ray"] = "local",
        on_event: Callable[[Event], None] | None = None, transport: Transport | None = None) -> RunResult:
    """Label ``config``'s input (or ``data``) and return how the run ended.

    ``data``: rows in memory instead of ``config.inputs``: a polars DataFrame, a pyarrow Table or
    RecordBatchReader, or an iterable of dicts, with the configured id and text columns. It is written
    once as Parquet under ``~/.cache/moderate/data`` (named by its content, so a rerun resumes).
    ``on_event``: called with each event of the run (``start``, ``progress``, ``pause``, ``warning``,
    ``finish``...) as a dict; every event also goes to the ``pipeline`` logger.
    Works inside a running event loop (a notebook cell): the run has a thread and a loop of its own. A first
    KeyboardInterrupt (Ctrl-C, a notebook's stop button) drains the run: ``outcome == "interrupted"``.
    Raises `pipeline.UserError` for a mistake found before anything is sent.
    """
    stopper = _Stopper()
    coroutine = run_async(config, data=data, engine=engine, on_event=on_event, transport=transport,
                          _on_start=stopper.register)
    # the run gets a thread and a loop of its own (a notebook cell has a loop running already); this
    # thread waits in short steps, so that Ctrl-C or a notebook's stop button reach it and drain the run
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="moderate-run")
    future = pool.submit(asyncio.run, coroutine)
    try:
        return _wait(future, stopper)
    finally:
        pool.shutdown(wait=False)


async def run_async(config: RunConfig, *, data: Any = None, engine: Literal["local", "ray"] = "local",
                    on_event: Callable[[Event], None] | None = None, transport: Transport | None = None,
                    _on_start: Callable[[Callable[[], None]], None] | None = None) -> RunResult:
    """`run` as a coroutine, on the caller's event loop."""
    config = _prepared(config, data)
    if engine == "ray":
        return await asyncio.to_thread(_run_on_ray, config)
    if engine != "local":
        raise ConfigError(f"engine must be 'local' or 'ray', not {engine!r}")
    log = RunLog(_LoggerStream(), secret=run_secrets(config), listener=on_event)
    ending = await run_local(config, log=log, transport=transport, progress=False, signals=False,
                             on_start=_on_start)
    return RunResult(ending.outcome, ending.exit_code, ending.out, ending.run_cost_usd, ending.stats,
                     ending.report or {})


class _Stopper:
    """Asks a run to drain, now or as soon as it starts (an interrupt may come while inputs are read)."""

    def __init__(self) -> None:
        self.requested = False
        self._stop: Callable[[], None] | None = None

    def register(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        if self.requested:
            stop()

    def stop(self) -> None:
        self.requested = True
        if self._stop is not None:
            self._stop()


def _wait(future: concurrent.futures.Future[RunResult], stopper: _Stopper) -> RunResult:
    """The run's result; a first KeyboardInterrupt drains the run (calls in flight finish), a second leaves it."""
    interrupted = False
    while True:
        try:
            return future.result(timeout=0.2)
        except concurrent.futures.TimeoutError:
            continue
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            stopper.stop()
            logger.warning("moderate: interrupted: finishing calls in flight; interrupt again to stop waiting")


def _prepared(config: RunConfig, data: Any) -> RunConfig:
    """A checked copy of ``config`` (presets applied as for a loaded one), reading ``data`` if given."""
    config = copy.copy(config)
    config.preset = set(config.preset)
    validate(config)
    if data is not None:
        from pipeline.readers.frames import materialize

        columns = [c for c in (config.id_column or "id", config.text_column, *config.keep_columns) if c]
        config.inputs = [materialize(data, columns=list(dict.fromkeys(columns)), text_column=config.text_column)]
    return config


def _run_on_ray(config: RunConfig) -> RunResult:
    from pipeline.engines.ray.engine import run_on_ray

    code = run_on_ray(config, stream=_LoggerStream(), progress=False)
    out = config.out
    report_file = Path(out) / "cost_report.json"
    report: dict[str, Any] = {}
    if report_file.exists():
        import orjson

        report = orjson.loads(report_file.read_bytes())
    return RunResult(_OUTCOMES.get(code, "failed"), code, out, float(report.get("cost_usd", 0.0)), None, report)


class _LoggerStream(LineWriter):
    """A text stream whose lines go to the ``pipeline`` logger (errors and warnings at their own level)."""

    def line(self, text: str) -> None:
        level = logging.ERROR if ": error:" in text else logging.WARNING if ": warning:" in text else logging.INFO
        logger.log(level, text)
