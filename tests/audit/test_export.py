"""`moderate export`: training sets in chat JSONL and flat Parquet, and rows for review."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import polars as pl
import pytest
from support import full_device, make_config, read_fifo, read_only, run_pipeline, write_jsonl

from pipeline.audit.export import verdict_text
from pipeline.audit.trainingset import export
from pipeline.cli.main import main
from pipeline.core import exitcodes
from pipeline.core.records import OutputFormat
from pipeline.plan.policies import load_policy
from pipeline.plan.prompt import neutralise, normalise, render_system

TEXTS = ["buy now and click here", "you people are vermin", "lovely weather today", "",
         "  spaced out\r\n text with <|end|> marker ", "click here you idiot"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("export")
    rows = [{"id": f"r{i}", "text": TEXTS[i % len(TEXTS)] + (f" #{i}" if TEXTS[i % len(TEXTS)] else ""),
             "gold": i % 2} for i in range(30)]
    data = write_jsonl(tmp / "in.jsonl", rows)
    config = make_config(tmp, [data])
    result = run_pipeline(config)
    assert result.code == 0, result.stderr
    return result.out, data


def input_texts(data: Path) -> dict[str, str]:
    return {r["id"]: r["text"] for r in map(orjson.loads, data.read_text().splitlines())}


def test_chat_jsonl_has_one_example_per_ok_label_with_the_runs_system_message(
        finished: tuple[Path, Path], tmp_path: Path) -> None:
    out, data = finished
    target = tmp_path / "train.jsonl"
    assert main(["export", str(out), "--format", "chat-jsonl", "--output", str(target)]) == 0
    examples = [orjson.loads(line) for line in target.read_text().splitlines()]
    labels = pl.read_parquet(sorted((out / "labels").glob("*.parquet")))
    ok = labels.filter(pl.col("status") == "ok")
    assert len(examples) == ok.height == 50  # 30 rows x 2 policies, minus 5 empty rows x 2
    systems = {name: render_system(load_policy(name), OutputFormat.RATIONALE) for name in ("spam", "hate_harassment")}
    texts = input_texts(data)
    for example, label in zip(examples, ok.iter_rows(named=True), strict=True):
        system, user, assistant = example["messages"]
        assert [m["role"] for m in example["messages"]] == ["system", "user", "assistant"]
        assert system["content"] == systems[label["policy"]]
        assert user["content"] == neutralise(normalise(texts[label["id"]]))
        verdict = orjson.loads(assistant["content"])
        assert list(verdict) == ["violation", "policy_category", "rule_ids", "confidence", "rationale"]
        assert verdict["violation"] == label["violation"] and verdict["rationale"] == label["rationale"]
    assert any("<\u200d|end|>" in e["messages"][1]["content"] for e in examples)


def test_parquet_is_flat_with_the_texts(finished: tuple[Path, Path], tmp_path: Path) -> None:
    out, data = finished
    target = tmp_path / "train.parquet"
    export(out, fmt="parquet", output=target)
    frame = pl.read_parquet(target)
    assert frame.columns[:8] == ["id", "text", "policy", "violation", "category", "rule_ids", "confidence",
                                 "rationale"]
    assert frame.height == 50
    texts = input_texts(data)
    for row in frame.iter_rows(named=True):
        assert row["text"] == neutralise(normalise(texts[row["id"]]))


def test_review_puts_gold_disagreements_first(finished: tuple[Path, Path], tmp_path: Path) -> None:
    out, data = finished
    target = tmp_path / "train.jsonl"
    summary = export(out, fmt="chat-jsonl", output=target, review=6, gold=str(data), gold_column="gold")
    review = [orjson.loads(line) for line in Path(summary["review_output"]).read_text().splitlines()]
    assert len(review) == 6 == summary["review"]
    gold = {r["id"]: r["gold"] for r in map(orjson.loads, data.read_text().splitlines())}
    assert all(item["violation"] != gold[item["id"]] for item in review)
    assert all("gold label" in " ".join(item["reasons"]) for item in review)
    assert [item["score"] for item in review] == sorted((item["score"] for item in review), reverse=True)


def test_a_changed_policy_is_refused(finished: tuple[Path, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = finished
    edited = tmp_path / "spam.md"
    edited.write_text(load_policy("spam").text + "\nOne more rule.\n")
    code = main(["export", str(out), "--format", "parquet", "--output", str(tmp_path / "x.parquet"),
                 "--policy", str(edited)])
    assert code == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert "changed since the run" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.parquet").exists()


def test_a_different_input_is_refused(finished: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = finished
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "r0", "text": "something else"}])
    code = main(["export", str(out), "--format", "parquet", "--output", str(tmp_path / "x.parquet"),
                 "--input", str(other)])
    assert code == exitcodes.EXIT_USAGE


@pytest.mark.parametrize(("fmt", "expected"), [
    ("binary", "1"),
    ("category", '{"violation":1,"policy_category":"SP2"}'),
    ("rationale", '{"violation":1,"policy_category":"SP2","rule_ids":["SP2"],"confidence":"high",'
                  '"rationale":"An ad."}'),
])
def test_verdict_is_written_in_the_runs_output_format(fmt: str, expected: str) -> None:
    label = {"violation": 1, "category": "SP2", "rule_ids": ["SP2"], "confidence": "high", "rationale": "An ad."}
    assert verdict_text(label, fmt) == expected


def test_binary_runs_export_single_character_answers(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "b.jsonl", [{"id": "a", "text": "buy now"}, {"id": "b", "text": "hi"}])
    config = make_config(tmp_path, [data], policies=["spam"], output_format=OutputFormat.BINARY)
    assert run_pipeline(config).code == 0
    target = tmp_path / "b-train.jsonl"
    export(Path(config.out), fmt="chat-jsonl", output=target)
    answers = [orjson.loads(line)["messages"][2]["content"] for line in target.read_text().splitlines()]
    assert answers == ["1", "0"]


def test_the_runs_text_column_is_found_without_a_flag(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "body.jsonl", [{"key": "k1", "body": "buy now"}, {"key": "k2", "body": "hi"}])
    config = make_config(tmp_path, [data], policies=["spam"], text_column="body", id_column="key")
    assert run_pipeline(config).code == 0
    target = tmp_path / "t.parquet"
    assert main(["export", config.out, "--format", "parquet", "--output", str(target)]) == 0
    frame = pl.read_parquet(target)
    assert frame["id"].to_list() == ["k1", "k2"] and frame["text"].to_list() == ["buy now", "hi"]


def test_an_unfinished_run_is_refused_with_its_labelled_rows_unless_partial(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    rows = [{"id": f"r{i}", "text": f"buy now and click here #{i}"} for i in range(40)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    result = run_pipeline(make_config(tmp_path, [data], policies=["spam"], max_cost=0.0005, concurrency=1))
    assert result.code == exitcodes.EXIT_BUDGET, result.stderr
    labelled = result.labels().filter(pl.col("status") == "ok").height
    assert 0 < labelled < 40
    output = tmp_path / "train.jsonl"

    code = main(["export", str(result.out), "--format", "chat-jsonl", "--output", str(output)])
    err = capsys.readouterr().err
    assert code == exitcodes.EXIT_USAGE
    assert f"{labelled:,} of 40 rows labelled" in err and "--partial" in err and err.count("\n") == 1
    assert not output.exists()

    code = main(["export", str(result.out), "--format", "chat-jsonl", "--output", str(output), "--partial"])
    assert code == exitcodes.EXIT_OK, capsys.readouterr().err
    assert len(output.read_text().splitlines()) == labelled

# -- the file the user names with --output ---------------------------------------------------------

def export_cli(out: Path, output: Path, *extra: str) -> int:
    return main(["export", str(out), "--format", "chat-jsonl", "--output", str(output), *extra])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moderate: error: ") and "Traceback" not in err, err
    return lines[0]


def test_a_full_device_as_output_is_one_line_and_stays_a_device(finished: tuple[Path, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    node = full_device(tmp_path)
    assert export_cli(finished[0], node) == exitcodes.EXIT_USAGE
    assert f"--output {node}: cannot write (No space left on device)" in one_error_line(capsys.readouterr().err)
    assert stat.S_ISCHR(node.lstat().st_mode)


def test_a_fifo_as_output_is_written_through(finished: tuple[Path, Path], tmp_path: Path) -> None:
    fifo = tmp_path / "train.jsonl"
    os.mkfifo(fifo)
    thread, got = read_fifo(fifo)
    assert export_cli(finished[0], fifo) == exitcodes.EXIT_OK
    thread.join(timeout=10)
    assert len(got[0].splitlines()) == 50 and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_stdout_as_output_carries_only_the_examples(finished: tuple[Path, Path], tmp_path: Path) -> None:
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/proc/self/fd/1")  # what /dev/stdout is, in a folder of the test's own
    done = subprocess.run([sys.executable, "-m", "pipeline", "export", str(finished[0]), "--format", "chat-jsonl",
                           "--output", str(stdout)], capture_output=True, text=True, timeout=60)
    assert done.returncode == exitcodes.EXIT_OK, done.stderr
    assert [len(orjson.loads(line)["messages"]) for line in done.stdout.splitlines()] == [3] * 50
    assert "50 examples" in done.stderr and stdout.is_symlink()


def test_a_symlink_as_output_writes_its_target_and_stays_a_link(finished: tuple[Path, Path], tmp_path: Path) -> None:
    real = tmp_path / "sets" / "train.parquet"
    real.parent.mkdir()
    link = tmp_path / "latest.parquet"
    link.symlink_to(real)
    assert main(["export", str(finished[0]), "--format", "parquet", "--output", str(link)]) == exitcodes.EXIT_OK
    assert link.is_symlink() and pl.read_parquet(real).height == 50


@pytest.mark.parametrize("where", ["a directory", "a missing folder"])
def test_an_unusable_output_path_is_one_line_exit_2_and_creates_nothing(
        finished: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    output = tmp_path if where == "a directory" else tmp_path / "no" / "such" / "train.jsonl"
    assert export_cli(finished[0], output) == exitcodes.EXIT_USAGE
    line = one_error_line(capsys.readouterr().err)
    assert f"--output {output}" in line
    assert not (tmp_path / "no").exists() and os.listdir(tmp_path) == []


def test_output_in_a_read_only_folder_is_one_line_exit_2(finished: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with read_only(tmp_path / "ro") as folder:
        assert export_cli(finished[0], folder / "train.jsonl") == exitcodes.EXIT_USAGE
        assert "cannot write" in one_error_line(capsys.readouterr().err)

def test_a_run_with_a_custom_policy_file_exports_with_no_flag_repeated(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policies" / "scams.md"
    policy.parent.mkdir()
    policy.write_text(load_policy("spam").text.replace("spam", "scam"))
    data = write_jsonl(tmp_path / "posts.jsonl", [{"pid": "p1", "body": "buy now"}, {"pid": "p2", "body": "hi"}])
    config = make_config(tmp_path, [data], policies=[str(policy)], text_column="body", id_column="pid")
    assert run_pipeline(config).code == 0
    (Path(config.out) / "report.html").unlink()  # the folder's manifest alone says what the run read
    monkeypatch.chdir(tmp_path / "policies")  # another folder: the policy and input paths are not relative
    target = tmp_path / "train.jsonl"
    assert main(["export", config.out, "--format", "chat-jsonl", "--output", str(target)]) == 0
    records = [orjson.loads(line) for line in target.read_text().splitlines()]
    assert len(records) == 2
    assert records[0]["messages"][0]["content"] == render_system(load_policy(policy), OutputFormat.RATIONALE)
    assert [r["messages"][1]["content"] for r in records] == ["buy now", "hi"]


def test_every_chat_record_names_its_policy_version_run_and_fingerprint(finished: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    out, _ = finished
    target = tmp_path / "train.jsonl"
    assert main(["export", str(out), "--format", "chat-jsonl", "--output", str(target)]) == 0
    labels = pl.read_parquet(sorted((out / "labels").glob("*.parquet"))).filter(pl.col("status") == "ok")
    records = [orjson.loads(line) for line in target.read_text().splitlines()]
    for record, label in zip(records, labels.iter_rows(named=True), strict=True):
        meta = record["metadata"]
        assert list(meta) == ["id", "policy", "policy_version", "output_format", "model", "served_model", "run_id",
                              "fingerprint", "confidence"]
        assert {k: meta[k] for k in meta} == {k: label[k] for k in meta}
        assert meta["run_id"] and meta["fingerprint"] and meta["policy_version"]


def test_no_metadata_writes_messages_only(finished: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = finished
    target = tmp_path / "train.jsonl"
    assert main(["export", str(out), "--format", "chat-jsonl", "--output", str(target), "--no-metadata"]) == 0
    assert {tuple(orjson.loads(line)) for line in target.read_text().splitlines()} == {("messages",)}


def test_parquet_keeps_the_shards_provenance_and_kept_columns(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": t, "lang": "en", "day": i}
                                              for i, t in enumerate(["buy now", "hello", "buy now"])])
    config = make_config(tmp_path, [data], policies=["spam"], keep_columns=["lang", "day"])
    assert run_pipeline(config).code == 0
    target = tmp_path / "train.parquet"
    export(Path(config.out), fmt="parquet", output=target)
    frame, labels = pl.read_parquet(target), pl.read_parquet(Path(config.out) / "labels")
    provenance = ["output_format", "reasoning_effort", "served_model", "source", "run_id", "fingerprint"]
    assert frame.columns[-8:] == [*provenance, "lang", "day"]
    assert frame.select(provenance).to_dicts() == labels.select(provenance).to_dicts()
    assert frame["source"].to_list() == ["api", "api", "duplicate"]
    assert frame["day"].to_list() == labels["day"].to_list() and frame["day"].dtype == labels["day"].dtype
