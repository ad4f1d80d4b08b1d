"""A policy with labels of its own (SP0–SP4 in OpenAI's style), run as written against the simulator answering
in that format, scored against a golden set of that shape with `eval --compare category`, and exported."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import polars as pl
import pyarrow.json
import pytest
from support import RunResult, make_config, run_pipeline

from pipeline.cli.main import main
from pipeline.core import exitcodes
from pipeline.core.records import OutputFormat
from pipeline.simulator import SimulatorConfig
from pipeline.simulator.config import Faults

DATA = Path(__file__).resolve().parents[1] / "data" / "spam_severity"
POLICY = DATA / "policy.txt"
AUDIT_DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"
LABEL, VIOLATION = r"D-(SP\d)", r"SP[2-4]"
TEMPLATE = ("Spam Policy (#SP)", "D-{rule}, R-SP0", "D-SP0, R-SP0")


def recipe_blocks() -> list[str]:
    """The bash blocks of docs/audit.md's recipe for a policy as written."""
    section = AUDIT_DOC.read_text(encoding="utf-8").split("## Recipe: a policy as written")[1].split("\n## ")[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def reshaped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden CSV of OpenAI's shape, reshaped by the docs' own snippet into spam.jsonl and golden.csv."""
    folder = tmp_path_factory.mktemp("golden")
    (folder / "golden_dataset.csv").write_bytes((DATA / "golden_dataset.csv").read_bytes())
    reshape = recipe_blocks()[1].replace("python3 -", f"{sys.executable} -", 1)
    subprocess.run(["bash", "-c", reshape], cwd=folder, check=True, timeout=60)
    return folder


@pytest.fixture(scope="module")
def policy_run(reshaped: Path, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    tmp = tmp_path_factory.mktemp("run")
    config = make_config(tmp, [reshaped / "spam.jsonl"], policies=[str(POLICY)], output_format=OutputFormat.POLICY,
                         label_pattern=LABEL, violation_pattern=VIOLATION)
    result = run_pipeline(config, SimulatorConfig(answer_templates=[TEMPLATE]))
    assert result.code == exitcodes.EXIT_OK, result.stderr
    return result


def test_the_reshaped_golden_set_has_every_numbered_row_with_its_class(reshaped: Path) -> None:
    with open(reshaped / "golden.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert Counter(r["truth"] for r in rows) == {"SP0": 5, "SP2": 3, "SP3": 3, "SP4": 3}
    assert rows[0]["text"] == "Thanks for the report, I will read it tonight."  # a quoted comma stays in the text
    assert len((reshaped / "spam.jsonl").read_text().splitlines()) == len(rows) == 14


def test_the_policy_goes_out_byte_equal_to_its_file(policy_run: RunResult) -> None:
    assert policy_run.stats.system_messages == [POLICY.read_text(encoding="utf-8")]
    assert "warning" not in policy_run.stderr


def test_every_row_is_read_through_the_patterns_and_keeps_its_answer(policy_run: RunResult) -> None:
    labels = policy_run.labels()
    assert labels.height == 14 and set(labels["status"]) == {"ok"}
    for row in labels.iter_rows(named=True):
        category = re.search(LABEL, row["raw_output"]).group(1)  # the answer as the simulator wrote it
        assert row["category"] == category and row["rule_ids"] == [category]
        assert row["violation"] == int(re.fullmatch(VIOLATION, category) is not None)
    assert labels["violation"].sum() > 0 and (labels["violation"] == 0).sum() > 0
    assert set(labels["output_format"]) == {"policy"}


def by_hand(out: Path, golden: Path) -> dict:
    with open(golden, newline="", encoding="utf-8") as f:
        truth = {r["id"]: r["truth"] for r in csv.DictReader(f)}
    pairs = [(truth[r["id"]], r["category"]) for r in pl.read_parquet(out / "labels").iter_rows(named=True)
             if r["status"] == "ok" and truth.get(r["id"])]
    classes = sorted({c for pair in pairs for c in pair})
    per_class, f1s = {}, []
    for c in classes:
        tp = sum(t == c and p == c for t, p in pairs)
        fp = sum(t != c and p == c for t, p in pairs)
        fn = sum(t == c and p != c for t, p in pairs)
        f1 = 2 * tp / (2 * tp + fp + fn)
        f1s.append(f1)
        per_class[c] = (tp / (tp + fp) if tp + fp else None, tp / (tp + fn) if tp + fn else None, f1)
    matrix = [[sum(t == a and p == b for t, p in pairs) for b in classes] for a in classes]
    return {"accuracy": sum(t == p for t, p in pairs) / len(pairs), "per_class": per_class,
            "macro_f1": sum(f1s) / len(f1s), "classes": classes, "matrix": matrix}


def test_eval_compare_category_equals_an_independent_recomputation(
        policy_run: RunResult, reshaped: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", str(policy_run.out), "--truth", str(reshaped / "golden.csv"), "--id-column", "id",
                 "--label-column", "truth", "--compare", "category", "--json"])
    assert code == exitcodes.EXIT_OK
    got, want = orjson.loads(capsys.readouterr().out), by_hand(policy_run.out, reshaped / "golden.csv")
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["macro_f1"] == pytest.approx(want["macro_f1"])
    assert got["confusion"]["classes"] == want["classes"] and got["confusion"]["matrix"] == want["matrix"]
    assert "SP5" in want["classes"]  # a class the truth never uses (the simulator's "seed phrase" rule)
    for name, (precision, recall, f1) in want["per_class"].items():
        m = got["per_class"][name]
        assert (m["precision"], m["recall"]) == (pytest.approx(precision), pytest.approx(recall))
        assert m["f1"] == pytest.approx(f1)
        for key in ("precision", "recall", "f1"):  # never a point, and around the estimate
            interval = m["intervals"][key]
            if m[key] is not None:
                assert interval[0] <= m[key] <= interval[1] and interval[0] < interval[1]
    # the run's violation pattern turns the truth classes into 0/1: the binary comparison comes too
    binary = got["policies"]["policy"]["violation"]
    assert binary["violation_pattern"] == VIOLATION and binary["scored"] == 14
    saved = orjson.loads((policy_run.out / "eval.json").read_bytes())
    assert {"accuracy", "per_class", "macro_f1", "confusion"} <= saved.keys()
    assert (policy_run.out / "report.html").exists()


def test_eval_text_shows_every_class_and_the_matrix(policy_run: RunResult, reshaped: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", str(policy_run.out), "--truth", str(reshaped / "golden.csv"), "--id-column", "id",
                 "--label-column", "truth", "--compare", "category"])
    out = capsys.readouterr().out
    assert code == 0 and "macro-F1" in out and "confusion" in out
    assert all(f"  {c} " in out for c in ("SP0", "SP2", "SP3", "SP4", "SP5"))


def test_chat_export_keeps_the_models_own_answer_and_names_policy_version_and_run(policy_run: RunResult,
                                                                                 tmp_path: Path) -> None:
    target = tmp_path / "train.jsonl"
    assert main(["export", str(policy_run.out), "--format", "chat-jsonl", "--output", str(target)]) == 0
    records = [orjson.loads(line) for line in target.read_text().splitlines()]
    labels = {r["id"]: r for r in policy_run.labels().iter_rows(named=True)}
    assert len(records) == 14
    for record in records:
        system, _, assistant = record["messages"]
        label = labels[record["metadata"]["id"]]
        assert system["content"] == POLICY.read_text(encoding="utf-8")
        assert assistant["content"] == label["raw_output"]
        assert record["metadata"]["policy_version"] == label["policy_version"]
        assert record["metadata"]["run_id"] == label["run_id"] and record["metadata"]["output_format"] == "policy"
    frame = pl.read_ndjson(target)  # loads as a table, metadata as a struct
    assert frame.height == 14 and frame["metadata"].struct.field("policy").to_list() == ["policy"] * 14
    table = pyarrow.json.read_json(target)  # the reader of datasets' load_dataset("json", ...)
    assert table.num_rows == 14 and table.column_names == ["messages", "metadata"]


def test_an_answer_without_a_label_is_invalid_output_after_its_retries_with_the_answer_kept(
        reshaped: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, [reshaped / "spam.jsonl"], policies=[str(POLICY)],
                         output_format=OutputFormat.POLICY, label_pattern=LABEL, violation_pattern=VIOLATION,
                         invalid_output_retries=1)
    template = ("Spam Policy (#SP)", "This looks like spam to me.", "D-SP0, R-SP0")
    result = run_pipeline(config, SimulatorConfig(answer_templates=[template], faults=Faults(length_empty=0.2)))
    assert result.code == exitcodes.EXIT_ROWS_FAILED, result.stderr
    labels = result.labels()
    assert labels.height == 14  # every row accounted for
    bad = labels.filter(pl.col("status") == "invalid_output")
    assert bad.height == labels["violation"].is_null().sum() > 0
    assert set(bad["raw_output"]) == {"This looks like spam to me."}
    assert all("no label matching" in e for e in bad["error"])
    assert bad["attempts"].min() >= 2  # retried as any invalid answer
    assert "Traceback" not in result.stderr


def test_a_policy_stating_its_own_format_is_warned_about_under_another_format(reshaped: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, [reshaped / "spam.jsonl"], policies=[str(POLICY)], limit=2)
    result = run_pipeline(config)
    assert result.code == exitcodes.EXIT_OK, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(POLICY) in warnings[0] and "--output-format policy" in warnings[0]


@pytest.mark.parametrize(("patterns", "says"), [
    (["--label-pattern", "(D)-(SP\\d)", "--violation-pattern", VIOLATION], "2 groups"),
    (["--label-pattern", "D-(SP", "--violation-pattern", VIOLATION], "not a valid regular expression"),
    (["--label-pattern", LABEL, "--violation-pattern", "[2-"], "not a valid regular expression"),
    (["--violation-pattern", VIOLATION], "needs 'policies.label_pattern' (--label-pattern RE)"),
])
def test_bad_patterns_stop_the_run_at_start_in_one_line(reshaped: Path, tmp_path: Path, patterns: list[str],
                                                         says: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--input", str(reshaped / "spam.jsonl"), "--policy", str(POLICY), "--output-format",
                 "policy", *patterns, "--out", str(tmp_path / "out"), "--provider", "simulator", "--no-progress"])
    err = capsys.readouterr().err
    assert code == exitcodes.EXIT_USAGE
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_docs_recipe_runs_as_written_on_a_golden_set_of_that_shape(reshaped: Path, tmp_path: Path) -> None:
    """Everything after the downloads, verbatim, with ``moderate`` as this checkout's ``python -m pipeline``."""
    for name in ("spam.jsonl", "golden.csv"):
        (tmp_path / name).write_bytes((reshaped / name).read_bytes())
    (tmp_path / "policy.txt").write_bytes(POLICY.read_bytes())
    shim = tmp_path / "bin" / "moderate"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pipeline "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(["bash", "-c", recipe_blocks()[2]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # eval's
    # the simulator's "seed phrase" rule answers D-SP5, which the recipe's D-(SP[0-4]) does not read as a label
    assert "invalid_output=1 ok=13" in done.stderr, done.stderr
    assert "macro-F1" in done.stdout and "as violations" in done.stdout and "1 not ok (invalid_output 1)" in done.stdout
