"""`moderate eval`: metrics against ground truth, checked against an independent computation."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import orjson
import polars as pl
import pytest
from support import make_config, run_pipeline, write_jsonl

from pipeline.audit.evaluate import Confusion, bootstrap_intervals, metrics, parse_truth
from pipeline.cli.main import main
from pipeline.core import exitcodes

MODERATION = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "openai_moderation"
if not MODERATION.exists():  # a worktree lives one folder deeper than the main checkout
    MODERATION = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "openai_moderation"
SAMPLES = MODERATION / "samples-1680.jsonl.gz"
needs_dataset = pytest.mark.skipif(not SAMPLES.exists(), reason=f"dataset not found: {SAMPLES}")


@pytest.fixture(scope="module")
def moderation_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Every 8th row of the OpenAI moderation test set (with an id added), labelled by the simulator."""
    tmp = tmp_path_factory.mktemp("moderation")
    rows = []
    with gzip.open(SAMPLES) as f:
        for i, line in enumerate(f):
            if i % 8 == 0:
                rows.append({"id": f"m{i}", **orjson.loads(line)})
    data = write_jsonl(tmp / "slice.jsonl", rows)
    config = make_config(tmp, [data], text_column="prompt", policies=["self_harm", "hate_harassment"])
    result = run_pipeline(config)
    assert result.code == exitcodes.EXIT_OK, result.stderr
    return result.out, data


def by_hand(out: Path, truth_file: Path, policy: str, column: str) -> dict:
    """The same metrics the long way: plain loops over the shard rows and the truth lines."""
    truth = {}
    for line in truth_file.read_text().splitlines():
        row = orjson.loads(line)
        if row.get(column) in (0, 1):
            truth[row["id"]] = row[column]
    tp = fp = fn = tn = no_truth = not_ok = 0
    for row in pl.read_parquet(sorted((out / "labels").glob("*.parquet"))).iter_rows(named=True):
        if row["policy"] != policy:
            continue
        if row["status"] != "ok":
            not_ok += 1
        elif row["id"] not in truth:
            no_truth += 1
        else:
            t, v = truth[row["id"]], row["violation"]
            tp += t == 1 and v == 1
            fp += t == 0 and v == 1
            fn += t == 1 and v == 0
            tn += t == 0 and v == 0
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if tp + fp + fn else None)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1,
            "accuracy": (tp + tn) / (tp + fp + fn + tn), "no_truth": no_truth, "not_ok": not_ok}


@needs_dataset
def test_metrics_match_an_independent_computation_on_the_moderation_set(
        moderation_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out, truth = moderation_run
    code = main(["eval", str(out), "--truth", str(truth), "--id-column", "id", "--label-column", "self_harm=SH",
                 "--label-column", "hate_harassment=H", "--json"])
    assert code == 0
    result = orjson.loads(capsys.readouterr().out)
    for policy, column in (("self_harm", "SH"), ("hate_harassment", "H")):
        got = result["policies"][policy]
        want = by_hand(out, truth, policy, column)
        assert got["confusion"] == {k: want[k] for k in ("tp", "fp", "fn", "tn")}
        for metric in ("precision", "recall", "f1", "accuracy"):
            assert got[metric] == pytest.approx(want[metric]) if want[metric] is not None else got[metric] is None
        assert got["excluded_no_truth"] == want["no_truth"] > 0  # the set's unknown labels
        assert got["excluded_not_ok"] == want["not_ok"]
        assert got["scored"] + got["excluded_no_truth"] + got["excluded_not_ok"] == 210
        assert got["confusion"]["fn"] > 0 and got["confusion"]["tn"] > 0
    assert result["policies"]["hate_harassment"]["confusion"]["tp"] > 0  # not a degenerate comparison
    assert (out / "eval.json").exists()


@needs_dataset
def test_rows_not_ok_are_left_out_and_counted(moderation_run: tuple[Path, Path], tmp_path: Path) -> None:
    out, truth = moderation_run
    labels = pl.read_parquet(sorted((out / "labels").glob("*.parquet")))
    broken = tmp_path / "broken"
    (broken / "labels").mkdir(parents=True)
    failed = labels.with_columns(
        status=pl.when(pl.col("id").is_in(["m0", "m8"])).then(pl.lit("failed")).otherwise(pl.col("status")),
        violation=pl.when(pl.col("id").is_in(["m0", "m8"])).then(None).otherwise(pl.col("violation")))
    failed.write_parquet(broken / "labels" / "part-00000.parquet")
    from pipeline.audit.evaluate import evaluate as run_eval

    result = run_eval(broken, truth=str(truth), id_column="id", label_columns=["SH"], policies=["self_harm"])
    assert result["policies"]["self_harm"]["excluded_not_ok"] == 2
    assert result["policies"]["self_harm"]["excluded_statuses"] == {"failed": 2}
    assert result["precision"] == result["policies"]["self_harm"]["precision"]


def test_metrics_and_undefined_ratios() -> None:
    assert metrics(Confusion(tp=0, fp=0, fn=0, tn=10)) == {"precision": None, "recall": None, "f1": None,
                                                           "accuracy": 1.0}
    m = metrics(Confusion(tp=3, fp=1, fn=2, tn=4))
    assert m["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_bootstrap_intervals_are_seeded_and_contain_the_estimate() -> None:
    c = Confusion(tp=40, fp=10, fn=20, tn=130)
    first = bootstrap_intervals(c, seed=7)
    assert first == bootstrap_intervals(c, seed=7)
    assert first != bootstrap_intervals(c, seed=8)
    for name, value in metrics(c).items():
        low, high = first[name]
        assert low < value < high
    # the 95% interval of a proportion of 200 is about +-1.96 standard errors wide
    se = math.sqrt(0.85 * 0.15 / 200)
    assert first["accuracy"][1] - first["accuracy"][0] == pytest.approx(2 * 1.96 * se, rel=0.2)


@pytest.mark.parametrize(("cell", "value"), [("1", 1), ("0", 0), ("true", 1), ("False", 0), (" yes ", 1),
                                             ("", None), (None, None), ("maybe", None), ("2", None)])
def test_truth_cells(cell: str | None, value: int | None) -> None:
    assert parse_truth(cell) == value


def test_truth_without_an_id_column_joins_by_row_like_the_run(tmp_path: Path, comments: Path) -> None:
    rows = [{"text": t, "gold": i % 2} for i, t in enumerate(["buy now", "hello", "click here", "hi there"])]
    data = write_jsonl(tmp_path / "noid.jsonl", rows)
    config = make_config(tmp_path, [data], policies=["spam"])
    assert run_pipeline(config).code == 0
    from pipeline.audit.evaluate import evaluate as run_eval

    result = run_eval(Path(config.out), truth=str(data), id_column=None, label_columns=["gold"])
    assert result["policies"]["spam"]["scored"] == 4


def test_unknown_policy_is_one_line_exit_2(tmp_path: Path, comments: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, [comments], policies=["spam"])
    assert run_pipeline(config).code == 0
    code = main(["eval", config.out, "--truth", str(comments), "--label-column", "nope=x"])
    assert code == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1


def test_precision_interval_does_not_collapse_at_zero_false_positives() -> None:
    from pipeline.audit.evaluate import intervals

    c = Confusion(tp=28, fp=0, fn=3, tn=40)
    found = intervals(c)
    low, high = found["precision"]
    assert 0.8 < low < 0.9 and high == pytest.approx(1.0)  # Wilson: about 0.88 to 1.00, not 1.000 to 1.000
    assert found["recall"][0] < 28 / 31 < found["recall"][1]
    assert found["f1"][0] < metrics(c)["f1"] <= found["f1"][1]


def test_f1_interval_falls_back_to_the_wilson_bounds_when_every_resample_agrees() -> None:
    from pipeline.audit.evaluate import intervals

    found = intervals(Confusion(tp=28, fp=0, fn=0, tn=12))
    assert found["f1"][0] < 1.0 and found["f1"][1] == pytest.approx(1.0)


def test_compare_category_with_unseen_classes_and_blank_truth(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(["buy now", "hello", "click here", "hi", "promo code"])]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    config = make_config(tmp_path, [data], policies=["spam"])
    assert run_pipeline(config).code == 0
    truth = tmp_path / "truth.csv"
    truth.write_text("id,cls\nr0,SP2\nr1,\nr2,SP9\nr3,SP0\nr4, SP2 \n")
    code = main(["eval", config.out, "--truth", str(truth), "--id-column", "id", "--label-column", "cls",
                 "--compare", "category", "--json"])
    result = orjson.loads(capsys.readouterr().out)
    assert code == 0
    spam = result["policies"]["spam"]
    assert result["compare"] == "category" and spam["excluded_no_truth"] == 1
    assert spam["scored"] == 4 and "SP9" in spam["classes"] and "(none)" in spam["classes"]  # safe rows: no category
    assert spam["per_class"]["SP2"]["support"] == 2  # " SP2 " is SP2
    assert "violation" not in spam  # a rationale run has no violation pattern to turn classes into 0/1


def test_compare_category_against_a_text_column_is_one_line_exit_2(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": f"r{i}", "text": f"message number {i}"} for i in range(600)]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    config = make_config(tmp_path, [data], policies=["spam"])
    assert run_pipeline(config).code == 0
    code = main(["eval", config.out, "--truth", str(data), "--label-column", "text", "--compare", "category"])
    err = capsys.readouterr().err
    assert code == exitcodes.EXIT_USAGE and "601 distinct classes" in err and len(err.strip().splitlines()) == 1


def test_compare_category_reads_numeric_class_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "rows.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(["buy now", "hi"])])
    config = make_config(tmp_path, [data], policies=["spam"])
    assert run_pipeline(config).code == 0
    truth = tmp_path / "truth.parquet"
    pl.DataFrame({"id": ["r0", "r1"], "level": [2, 0]}).write_parquet(truth)
    code = main(["eval", config.out, "--truth", str(truth), "--label-column", "level", "--compare", "category",
                 "--json"])
    assert code == 0
    assert {"0", "2"} <= set(orjson.loads(capsys.readouterr().out)["confusion"]["classes"])
