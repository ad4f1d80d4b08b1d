"""``moderate simulate``: flags, loopback-only binding, the startup line, stopping by itself."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

import aiohttp
import pytest

from pipeline.simulator import SimulatorConfig
from pipeline.simulator import cli as simulator_cli


def parse_cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    simulator_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_flags_build_the_config() -> None:
    config = simulator_cli.config_from_args(
        parse_cli("--fault-rate", "0.6", "--reset", "0", "--refusal", "0.2", "--rpm", "60", "--no-usage")
    )
    assert config.faults.error_5xx == pytest.approx(0.1) and config.faults.reset == 0
    assert config.faults.refusal == 0.2 and config.rpm == 60 and not config.include_usage


def test_cli_refuses_a_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulator_cli.main(parse_cli("--host", "0.0.0.0")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loopback" in err


@pytest.mark.parametrize("port", ["80000", "-1"])
def test_cli_refuses_a_port_out_of_range_in_one_line(capsys: pytest.CaptureFixture[str], port: str) -> None:
    from pipeline.cli.main import main

    assert main(["simulate", "--port", port]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --port {port}: must be 0..65535 (0 picks a free one)\n"


CLI = (
    "import argparse, sys; from pipeline.simulator import cli; p = argparse.ArgumentParser(); "
    "cli.add_arguments(p); sys.exit(cli.main(p.parse_args(sys.argv[1:])))"
)


def test_cli_with_port_zero_prints_the_real_port_and_serves() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CLI, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("simulator listening on http://127.0.0.1:") and "keyword rule" in line
        base_url = line.split()[3]
        assert not base_url.endswith(":0/v1")

        async def models() -> list[str]:
            async with aiohttp.ClientSession() as session, session.get(f"{base_url}/models") as resp:
                return [m["id"] for m in (await resp.json())["data"]]

        assert asyncio.run(models()) == SimulatorConfig().models
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0 and "Traceback" not in err


@pytest.mark.slow
def test_cli_stops_by_itself_when_idle() -> None:
    done = subprocess.run([sys.executable, "-c", CLI, "--port", "0", "--idle-seconds", "0.3"],
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 0 and "idle-seconds" in done.stderr


def test_cli_host_profile_flags_build_the_config() -> None:
    config = simulator_cli.config_from_args(parse_cli(
        "--profile", "modelslab", "--queue", "10", "--queue-retry-after", "3", "--api-key", "k",
        "--processing", "0.5", "--count-tokens", "o200k", "--current-date", "2025-06-28"))
    assert (config.profile, config.queue, config.queue_retry_after, config.api_key) == ("modelslab", 10, 3, "k")
    assert config.processing == 0.5 and config.count_tokens == "o200k" and config.current_date == "2025-06-28"
    config = simulator_cli.config_from_args(parse_cli("--profile", "vllm", "--max-num-seqs", "4"))
    assert config.max_num_seqs == 4


def test_cli_fault_mix_takes_the_eight_way_preset_or_pairs() -> None:
    config = simulator_cli.config_from_args(parse_cli("--fault-mix", "eight-way", "--hang", "0"))
    assert config.faults.rate_limited == 0.05 and config.faults.error_503_html == 0.02 and config.faults.hang == 0
    config = simulator_cli.config_from_args(parse_cli("--fault-mix", "rate-limited=0.05,choice_error=0.1"))
    assert config.faults.rate_limited == 0.05 and config.faults.choice_error == 0.1
    with pytest.raises(SystemExit):
        parse_cli("--fault-mix", "teapot=0.5")


def test_cli_profile_serves_that_hosts_paths() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CLI, "--port", "0", "--profile", "vllm", "--max-num-seqs", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "profile vllm" in line
        root = line.split()[3].removesuffix("/v1")

        async def scrape() -> str:
            async with aiohttp.ClientSession() as session, session.get(f"{root}/metrics") as resp:
                return await resp.text()

        assert "vllm:num_requests_waiting{" in asyncio.run(scrape())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0 and "Traceback" not in err


def test_answer_template_flag_is_repeatable() -> None:
    config = simulator_cli.config_from_args(parse_cli("--answer-template", "Spam Policy (#SP)", "D-{rule}", "D-SP0",
                                                      "--answer-template", "Hate", "INVALID", "VALID"))
    assert config.answer_templates == [("Spam Policy (#SP)", "D-{rule}", "D-SP0"), ("Hate", "INVALID", "VALID")]
