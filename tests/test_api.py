"""The library: load_config, run and run_async as a notebook or an orchestrator calls them."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import pipeline
from pipeline.core.errors import exit_code_for

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["see you at the meetup", "buy now and click here for free money", "thanks for sharing", "free gift card"]


def _frame(rows: int) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"r{i}" for i in range(rows)], "text": [f"{TEXTS[i % 4]} #{i}" for i in range(rows)]})


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_run_and_run_async_inside_a_running_loop_label_a_dataframe_and_print_nothing(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "out"))
    frame = _frame(30)

    async def notebook_cell() -> tuple[pipeline.RunResult, pipeline.RunResult, str]:
        first = pipeline.run(config, data=frame)  # a loop is running: must not raise
        second = await pipeline.run_async(pipeline.load_config(provider="simulator", policy=["spam"],
                                                               out=str(tmp_path / "out2")), data=frame)
        try:
            pipeline.run(pipeline.load_config(provider="simulator", input=str(tmp_path / "missing.jsonl"),
                                              out=str(tmp_path / "out3")))
        except pipeline.UserError as exc:
            return first, second, str(exc)
        raise AssertionError("a missing input must raise UserError")

    first, second, error = asyncio.run(notebook_cell())
    assert (first.outcome, second.outcome) == ("finished", "finished")
    assert first.exit_code == 0 and first.cost_usd > 0
    labels = first.labels()
    assert sorted(labels["id"].to_list()) == sorted(frame["id"].to_list())  # one row per input row
    assert set(labels["status"]) == {"ok"}
    assert second.labels().height == 30
    assert "missing.jsonl" in error
    assert capfd.readouterr().out == ""


def test_a_second_run_of_the_same_data_has_nothing_to_do_and_pays_nothing(tmp_path: Path) -> None:
    config = pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "out"))
    assert pipeline.run(config, data=_frame(12)).outcome == "finished"
    again = pipeline.run(config, data=_frame(12))
    assert (again.outcome, again.exit_code, again.cost_usd) == ("nothing_to_do", 0, 0.0)
    assert again.labels().height == 12


@pytest.mark.parametrize("kind", ["arrow_table", "record_batch_reader", "dicts"])
def test_data_may_be_arrow_or_dicts(tmp_path: Path, kind: str) -> None:
    table = _frame(9).to_arrow()
    data = {"arrow_table": table, "record_batch_reader": pa.RecordBatchReader.from_batches(table.schema,
                                                                                           table.to_batches()),
            "dicts": iter(table.to_pylist())}[kind]
    result = pipeline.run(pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o")),
                          data=data)
    assert result.outcome == "finished" and result.labels().height == 9


def test_data_of_an_unknown_type_is_a_user_error(tmp_path: Path) -> None:
    config = pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o"))
    with pytest.raises(pipeline.InputError, match="data=: expected"):
        pipeline.run(config, data=42)


def test_load_config_applies_the_provider_presets_as_the_cli_does() -> None:
    config = pipeline.load_config(provider="modelslab")
    assert config.model == "openai-gpt-oss-safeguard-20b"
    assert config.concurrency < 64


def test_a_hand_built_config_has_its_hosts_presets_and_is_checked_when_run(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODERATION_API_KEY", raising=False)
    config = pipeline.RunConfig(provider="modelslab", inputs=[str(tmp_path / "x.jsonl")], out=str(tmp_path / "o"))
    assert (config.model, config.concurrency) == ("openai-gpt-oss-safeguard-20b", 5)
    (tmp_path / "x.jsonl").write_text('{"id": 1, "text": "hi"}\n')
    with pytest.raises(pipeline.UserError, match="no API key"):
        pipeline.run(config)
    config.concurrency = 0
    with pytest.raises(pipeline.ConfigError, match="concurrency"):
        pipeline.run(config)


def test_load_config_takes_flag_names_single_values_and_paths(tmp_path: Path) -> None:
    config = pipeline.load_config(REPO / "configs" / "demo.toml", input=tmp_path / "a.jsonl", policy="spam",
                                  max_cost=2, base_url="http://127.0.0.1:9/v1")
    assert config.inputs == [str(tmp_path / "a.jsonl")] and config.policies == ["spam"]
    assert (config.max_cost, config.base_url) == (2, "http://127.0.0.1:9/v1")


def test_load_config_refuses_an_unknown_setting_and_a_bad_value() -> None:
    with pytest.raises(pipeline.ConfigError, match="unknown setting 'concurency'"):
        pipeline.load_config(concurency=3)
    with pytest.raises(pipeline.ConfigError, match="concurrency"):
        pipeline.load_config(concurrency=0)


def test_on_event_hears_start_progress_and_finish(tmp_path: Path) -> None:
    events: list[dict] = []
    config = pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o"))
    pipeline.run(config, data=_frame(5), on_event=events.append)
    names = [e["event"] for e in events]
    assert names[0] == "start" and names[-1] == "finish"
    assert events[-1]["exit_code"] == 0 and "message" in events[-1]


def test_every_error_is_a_moderate_error_and_says_its_exit_code() -> None:
    for name in ("ConfigError", "InputError", "PolicyError", "PricingError", "StoreError", "StorageError",
                 "OutputDirError"):
        cls = getattr(pipeline, name)
        assert issubclass(cls, pipeline.UserError) and issubclass(cls, pipeline.ModerateError)
        assert exit_code_for(cls("x")) == 2
    assert exit_code_for(pipeline.OutputLockedError("x")) == 5


def test_the_public_names_all_resolve() -> None:
    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None, name


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / "api.md").read_text(), flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_snippets())))
def test_the_snippets_of_docs_api_md_run_as_written(index: int, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for folder in ("configs", "data"):  # the snippets run from the repository's root; their out/ goes here
        shutil.copytree(REPO / folder, tmp_path / folder, symlinks=True)
    shutil.copytree(REPO / "pipeline" / "builtin", tmp_path / "pipeline" / "builtin")
    monkeypatch.chdir(tmp_path)
    exec(compile(_snippets()[index], f"docs/api.md snippet {index + 1}", "exec"), {})


def test_a_model_set_on_a_config_after_it_was_made_is_kept(tmp_path: Path) -> None:
    config = pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o"))
    config.model = "gpt-oss-safeguard-120b-simulator"
    result = pipeline.run(config, data=_frame(3))
    assert set(result.labels()["model"]) == {"gpt-oss-safeguard-120b-simulator"}


def test_data_without_the_text_column_names_the_columns_it_has(tmp_path: Path) -> None:
    config = pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o"))
    with pytest.raises(pipeline.InputError, match=r"data=: no column 'text' \(columns: id, body\)"):
        pipeline.run(config, data=pl.DataFrame({"id": ["1"], "body": ["x"]}))


def test_an_empty_frame_is_a_finished_run_with_no_labels(tmp_path: Path) -> None:
    config = pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o"))
    empty = pl.DataFrame({"id": [], "text": []}, schema={"id": pl.Utf8, "text": pl.Utf8})
    result = pipeline.run(config, data=empty)
    assert (result.outcome, result.exit_code, result.labels().height) == ("finished", 0, 0)


def test_an_on_event_callback_that_raises_is_dropped_and_the_run_goes_on(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def broken(event: dict) -> None:
        calls.append(event["event"])
        raise ZeroDivisionError("oops")

    config = pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o"))
    result = pipeline.run(config, data=_frame(4), on_event=broken)
    assert result.outcome == "finished" and result.labels().height == 4
    assert len(calls) == 1 and "on_event raised ZeroDivisionError" in caplog.text


@pytest.mark.slow
def test_interrupting_a_notebook_cell_drains_the_run_and_returns_interrupted(tmp_path: Path) -> None:
    import os
    import signal
    import threading
    import time

    config = pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o"), concurrency=2,
                                  simulator_latency_ms=100.0)

    async def cell() -> pipeline.RunResult:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # the notebook's stop button
        return pipeline.run(config, data=_frame(400))

    started = time.monotonic()
    loop = asyncio.new_event_loop()  # as Jupyter runs cells: SIGINT raises KeyboardInterrupt in the cell
    try:
        result = loop.run_until_complete(cell())
    finally:
        loop.close()
    assert result.outcome == "interrupted" and result.exit_code == 130
    assert time.monotonic() - started < 30  # not the whole run (about 20 s at 2 x 10 a second)
    statuses = result.labels()["status"].value_counts()
    assert dict(statuses.iter_rows())["interrupted"] > 100
    assert pipeline.run(config, data=_frame(400)).labels().filter(pl.col("status") == "ok").height == 400


def test_every_run_flag_is_a_setting_or_a_one_line_pointer_to_where_the_library_takes_it() -> None:
    from pipeline.cli.main import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    for action in commands.choices["run"]._actions:
        names = [o for o in action.option_strings if o.startswith("--")]
        if not names or action.dest == "help":
            continue
        name = names[0][2:].replace("-", "_")
        try:
            pipeline.load_config(**{name: None})
        except pipeline.ConfigError as exc:
            assert "unknown setting" not in str(exc) and "\n" not in str(exc), name


@pytest.mark.parametrize("rows", [[], iter(()), pa.RecordBatchReader.from_batches(pa.schema([("id", pa.string()),
                                                                                             ("text", pa.string())]),
                                                                                   [])])
def test_data_with_no_rows_tonight_is_a_finished_run_with_no_labels(tmp_path: Path, rows: object) -> None:
    result = pipeline.run(pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o")),
                          data=rows)
    assert (result.outcome, result.exit_code, result.labels().height) == ("finished", 0, 0)


def test_ids_past_64_bits_in_a_polars_frame_are_labelled_as_text(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": [2**70, 1], "text": ["buy now and click here", "hello"]})
    result = pipeline.run(pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o")),
                          data=frame)
    assert sorted(result.labels()["id"].to_list()) == sorted(["1", str(2**70)])


def test_two_threads_running_one_folder_at_once_one_runs_the_other_is_refused(tmp_path: Path) -> None:
    import threading

    config = pipeline.load_config(provider="simulator", policy=["spam"], out=str(tmp_path / "o"))
    ended: list[str] = []

    def run() -> None:
        try:
            ended.append(pipeline.run(config, data=_frame(200)).outcome)
        except pipeline.OutputLockedError as exc:
            ended.append(type(exc).__name__)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(ended) in (["OutputDirLocked", "finished"], ["finished", "nothing_to_do"])
    assert pipeline.run(config, data=_frame(200)).labels().select("id").n_unique() == 200
