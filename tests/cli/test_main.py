from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli.jobflags import job_config
from pipeline.cli.main import build_parser, main
from pipeline.core import exitcodes

ROOT = Path(__file__).resolve().parents[2]
EXIT_CODES = {name: value for name, value in vars(exitcodes).items() if name.startswith("EXIT_")}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("moderate: error: ")
    return lines[0]


def run_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_run_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    text = run_help(capsys)
    assert len(EXIT_CODES) == 10
    lines = text.split("exit codes:", 1)[1].splitlines()
    listed = {int(line.split()[0]) for line in lines if line.strip() and line.split()[0].isdigit()}
    assert listed == set(EXIT_CODES.values())


def test_run_help_lists_the_flags_and_the_key_variable(capsys: pytest.CaptureFixture[str]) -> None:
    text = run_help(capsys)
    for flag in ("--input", "--policy", "--out", "--provider", "--concurrency", "--max-cost", "--force",
                 "--no-progress", "--keep-reasoning", "--keep-columns", "--sample", "--seed", "--log-format",
                 "--canaries", "--drift-threshold", "--gpu-hour-usd"):
        assert flag in text
    assert "MODERATION_API_KEY" in text


def test_config_with_an_unknown_key_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[limits]\nconcurrency = 4\nconcurency = 8\n')
    assert main(["run", str(config)]) == exitcodes.EXIT_USAGE
    line = one_error_line(capsys.readouterr().err)
    assert "'limits.concurency'" in line and "bad.toml" in line


def test_config_with_an_unknown_section_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[limitz]\nrpm = 1\n")
    assert main(["run", str(config)]) == exitcodes.EXIT_USAGE
    assert "[limitz]" in one_error_line(capsys.readouterr().err)


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.toml")]) == exitcodes.EXIT_USAGE
    assert "config file not found" in one_error_line(capsys.readouterr().err)


def test_concurrency_zero_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--input", str(tmp_path / "x.jsonl"), "--concurrency", "0", "--out", str(tmp_path / "o")])
    assert code == exitcodes.EXIT_USAGE
    assert "'limits.concurrency' must be greater than 0" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_a_bad_flag_value_is_blamed_on_the_flag_not_the_config_file(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[limits]\nconcurrency = 4\n")
    assert main(["run", str(config), "--input", "x.jsonl", "--concurrency", "0"]) == exitcodes.EXIT_USAGE
    assert one_error_line(capsys.readouterr().err) == \
        "moderate: error: --concurrency 0: 'limits.concurrency' must be greater than 0"
    assert main(["run", str(config), "--input", "x.jsonl", "--alert-webhook", "ftp://hooks/tok-123"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("moderate: error: --alert-webhook: ") and "tok-123" not in line


def test_negative_max_cost_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--input", "x.jsonl", "--max-cost", "-1"]) == exitcodes.EXIT_USAGE
    assert "'limits.max_cost'" in one_error_line(capsys.readouterr().err)


def test_no_input_exits_2_with_one_line(tmp_path: Path) -> None:
    # a process of its own: run_job's default stream is the sys.stderr of import time
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--out", str(tmp_path / "o"), "--no-progress"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == exitcodes.EXIT_USAGE
    assert done.stdout == ""
    line = one_error_line(done.stderr)
    assert "no input" in line and "--input" in line
    assert not (tmp_path / "o").exists()


def test_unknown_flag_is_an_argparse_usage_error_with_the_sub_commands_usage(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--concurency", "3"])
    assert exited.value.code == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: moderate run ") and "moderate run: error: unrecognized arguments: --concurency" in err
    with pytest.raises(SystemExit):
        main(["eval", "out", "--truth", "t.csv", "--label-column", "g", "--nope"])
    assert capsys.readouterr().err.startswith("usage: moderate eval ")


def test_bad_choice_is_an_argparse_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--provider", "nope"])
    assert exited.value.code == exitcodes.EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_pipeline_run_help_works() -> None:
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: moderate run")
    assert "exit codes:" in done.stdout and "130" in done.stdout


def test_response_format_flag_reaches_the_config() -> None:
    args = build_parser().parse_args(["run", "--provider", "groq", "--response-format", "json_schema"])
    assert job_config(args).response_format == "json_schema"
    args = build_parser().parse_args(["check", "--provider", "modelslab"])
    assert job_config(args).model == "openai-gpt-oss-safeguard-20b"


@pytest.mark.parametrize("url", ["ftp://example.com/v1", "not a url", "http://127.0.0.1:8000/v1?key=sk-1"])
def test_unusable_base_url_exits_2_before_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  url: str) -> None:
    code = main(["run", "--input", str(tmp_path / "x.jsonl"), "--base-url", url, "--out", str(tmp_path / "o")])
    assert code == exitcodes.EXIT_USAGE
    line = one_error_line(capsys.readouterr().err)
    assert "'endpoint.base_url'" in line and "sk-1" not in line
    assert not (tmp_path / "o").exists()


def test_an_interrupt_while_starting_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import pipeline.cli.main as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "job_config", interrupted)
    assert cli.main(["run", "--input", "x.jsonl"]) == exitcodes.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "interrupted" in err


@pytest.mark.parametrize(("flags", "named"), [
    (["--base-url", "http://[::1"], "'endpoint.base_url' is not a usable URL (got 'http://[::1')"),
    (["--base-url", "http://user:sk-secret@[::1/v1"], "'endpoint.base_url' is not a usable URL"),
    (["--base-url", "http://127.0.0.1:99999/v1"], "'endpoint.base_url' is not a usable URL"),
    (["--model", ""], "'endpoint.model' must not be empty"),
    (["--text-column", " "], "'input.text_column' must not be empty"),
    (["--drift-threshold", "2"], "'quality.drift_threshold' = 2 is a share of the labels"),
    (["--concurrency", "1000000000"], "'limits.concurrency' = 1000000000 is over 100,000"),
    (["--engine", "ray", "--ray-actors", "-1"], "--ray-actors -1: must be at least 1"),
])
def test_a_nonsense_flag_is_one_line_exit_2_before_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            flags: list[str], named: str) -> None:
    code = main(["run", "--input", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o"), *flags])
    assert code == exitcodes.EXIT_USAGE
    line = one_error_line(capsys.readouterr().err)
    assert named in line and "sk-secret" not in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("toml", "named"), [
    ("[output]\nshard_rows = 100000000000000000\n", "'output.shard_rows' = 100000000000000000 is over 10,000,000"),
    ("[quality]\ndrift_threshold = 2\n", "'quality.drift_threshold' = 2"),
    ('[endpoint]\nmodel = ""\n', "'endpoint.model' must not be empty"),
])
def test_a_nonsense_config_value_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   toml: str, named: str) -> None:
    config = tmp_path / "run.toml"
    config.write_text(toml)
    assert main(["run", str(config), "--input", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert f"{config}: {named}" in one_error_line(capsys.readouterr().err)


def test_a_store_whose_folder_cannot_be_created_is_one_line_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "1", "text": "hello"}\n')
    (tmp_path / "afile").write_text("not a folder")
    store = tmp_path / "afile" / "sub" / "store.sqlite"
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--input", str(data), "--provider", "simulator",
                           "--store", str(store), "--out", str(tmp_path / "o"), "--no-progress"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == exitcodes.EXIT_USAGE, done.stderr
    assert f"{store}: cannot create the store's folder (Not a directory)" in one_error_line(done.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.25, 0.7])
def test_sigterm_while_starting_is_one_line_and_exit_130(tmp_path: Path, after_s: float) -> None:
    """Signalled while it imports polars and pyarrow and reads its input, before any request."""
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"id": "{i}", "text": "buy now #{i}"}}\n' for i in range(20_000)))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--input", str(data), "--provider", "simulator",
                             "--out", str(tmp_path / "o"), "--no-progress"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == exitcodes.EXIT_INTERRUPTED, err
    assert out == "" and "Traceback" not in err
    assert "interrupted" in err, err
    if "SIGTERM received" not in err:  # on a fast machine the run may have started: then its own summary
        assert len(err.strip().splitlines()) == 1, err
