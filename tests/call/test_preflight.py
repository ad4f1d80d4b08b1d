from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from support import LEAKED_KEY, SIM_MODEL, leaks, serve_app

from pipeline.call.answers import read_reply
from pipeline.call.preflight import CheckResult, check_async, exit_code, format_table, rate_limit_headers
from pipeline.cli.main import main
from pipeline.config.providers import USER_AGENT
from pipeline.config.rules import validate
from pipeline.config.settings import RunConfig
from pipeline.core import exitcodes
from pipeline.simulator import SimulatorConfig, start_simulator
from pipeline.simulator.config import Faults

KEY = "sk-check-0123456789-SECRET"


def make(**changes: Any) -> RunConfig:
    config = RunConfig(policies=["spam", "hate_harassment"], provider="openai", model=SIM_MODEL,
                       request_timeout=5.0, api_key_env="MODERATE_TEST_KEY")
    for name, value in changes.items():
        setattr(config, name, value)
    validate(config)
    return config


def check(config: RunConfig, sim: SimulatorConfig | None = None) -> tuple[int, str, int]:
    """Exit code, printed output and chat requests the simulator received."""

    async def go() -> tuple[int, str, int]:
        async with start_simulator(sim or SimulatorConfig()) as server:
            config.base_url = config.base_url or server.base_url
            out = io.StringIO()
            code = await check_async(config, stream=out)
            return code, out.getvalue(), server.stats.requests

    return asyncio.run(go())


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MODERATE_TEST_KEY", KEY)
    return KEY


# ---- against the simulator over loopback ---------------------------------------------------------


def test_a_healthy_endpoint_passes_with_one_call_per_policy(key: str) -> None:
    sim = SimulatorConfig(api_key=key, rpm=6000, advertise_limits=True)
    code, out, requests = check(make(), sim)
    assert code == exitcodes.EXIT_OK, out
    assert requests == 2
    for row in ("endpoint", "model", "key", "canary spam", "canary hate_harassment"):
        assert any(line.split()[:len(row.split()) + 1] == [*row.split(), "ok"] for line in out.splitlines()), row
    assert "violation=1" in out  # the spam canary
    assert "x-ratelimit-limit-requests=6000" in out
    assert "all checks passed (exit 0)" in out
    assert key not in out


def test_a_wrong_key_exits_4_after_one_call_and_never_prints_the_key(key: str) -> None:
    code, out, requests = check(make(), SimulatorConfig(api_key="sk-the-right-one"))
    assert code == exitcodes.EXIT_ENDPOINT
    assert "key rejected" in out
    assert requests == 1  # the second policy's canary is not sent
    assert key not in out and "sk-the-right-one" not in out


def test_a_model_the_server_does_not_list_exits_4_without_any_call() -> None:
    code, out, requests = check(make(model="gpt-oss-safeguard-20b-typo"))
    assert code == exitcodes.EXIT_ENDPOINT
    assert "gpt-oss-safeguard-20b-typo is not served here (served: gpt-oss-safeguard-20b-simulator" in out
    assert requests == 0


def test_an_answer_that_is_not_a_verdict_exits_1() -> None:
    code, out, _ = check(make(), SimulatorConfig(faults=Faults(junk_output=1.0)))
    assert code == exitcodes.EXIT_ROWS_FAILED
    assert "canary spam" in out and "no verdict" in out


def test_a_host_echoing_the_key_in_any_encoding_never_gets_any_of_it_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATE_TEST_KEY", LEAKED_KEY)
    echoing = SimulatorConfig(api_key=LEAKED_KEY, echo_key=True, faults=Faults(junk_output=1.0))
    code, out, _ = check(make(), echoing)
    assert code == exitcodes.EXIT_ROWS_FAILED and "no verdict" in out and "[redacted]" in out
    # the answer is quoted cut short: the key must be out before the cut, or its start would show
    assert leaks(out) == [] and LEAKED_KEY[:8] not in out, out
    code, out, _ = check(make(model="gpt-oss-safeguard-999b-simulator"), echoing)
    assert code == exitcodes.EXIT_ENDPOINT and "is not served here" in out and leaks(out) == []


def test_a_daily_cap_said_only_in_the_body_exits_4_as_the_run_would_and_shows_the_cap(key: str) -> None:
    code, out, requests = check(make(provider="openrouter"), SimulatorConfig(profile="openrouter", rpd=0))
    assert code == exitcodes.EXIT_ENDPOINT, out
    assert "free-models-per-day" in out and "the host's quota is spent; it resets in" in out
    assert requests == 1  # the second policy's canary would meet the same cap
    assert "x-ratelimit-remaining=0" in out and "no rate-limit headers sent" not in out


def test_nothing_listening_exits_4() -> None:
    code, out, requests = check(make(base_url="http://127.0.0.1:9/v1"))
    assert code == exitcodes.EXIT_ENDPOINT
    assert "cannot connect to 127.0.0.1:9" in out
    assert requests == 0


def test_a_hosted_provider_without_a_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODERATE_TEST_KEY", raising=False)
    code, out, requests = check(make(provider="groq", model=SIM_MODEL))
    assert code == exitcodes.EXIT_USAGE
    assert "set the environment variable MODERATE_TEST_KEY" in out
    assert requests == 0


def test_structured_output_is_sent_when_asked(key: str) -> None:
    code, out, _ = check(make(response_format="json_schema"))
    assert code == exitcodes.EXIT_OK, out


# ---- a ModelsLab-shaped host (no /models, errors as 200 {"status": "error"}) ---------------------


class ModelsLabLike:
    def __init__(self, key: str) -> None:
        self.key = key
        self.bodies: list[dict[str, Any]] = []
        self.user_agents: list[str] = []

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        self.user_agents.append(request.headers.get("User-Agent", ""))
        if body.get("key") != self.key:  # the host quotes the key it was sent
            return web.json_response({"status": "error", "message": f"Invalid API key {body.get('key')}"})
        content = orjson.dumps({"violation": 1, "policy_category": "SP2", "rule_ids": ["SP2"],
                                "confidence": "high", "rationale": "spam"}).decode()
        return web.json_response({"choices": [{"message": {"content": content}, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 600, "completion_tokens": 40}})

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_post("/api/v7/llm/chat/completions", self.chat)
        async with serve_app(app) as root:
            yield root + "/api/v7/llm"


def check_modelslab(host: ModelsLabLike) -> tuple[int, str]:
    config = RunConfig(policies=["spam", "hate_harassment"], provider="modelslab", api_key_env="MODERATE_TEST_KEY")
    validate(config)
    assert config.model == "openai-gpt-oss-safeguard-20b"  # the provider's own id when none is given

    async def go() -> tuple[int, str]:
        async with host.serve() as base_url:
            config.base_url = base_url
            out = io.StringIO()
            code = await check_async(config, stream=out)
            return code, out.getvalue()

    return asyncio.run(go())


def test_modelslab_canaries_carry_its_model_id_key_and_user_agent(key: str) -> None:
    host = ModelsLabLike(key)
    code, out = check_modelslab(host)
    assert code == exitcodes.EXIT_OK, out
    assert [b["model_id"] for b in host.bodies] == ["openai-gpt-oss-safeguard-20b"] * 2
    assert host.user_agents == [USER_AGENT] * 2
    assert "model" not in [line.split()[0] for line in out.splitlines()[1:]]  # no model list to check
    assert key not in out


def test_a_modelslab_error_body_with_http_200_exits_4_and_hides_the_echoed_key(key: str) -> None:
    host = ModelsLabLike("sk-another-key")
    code, out = check_modelslab(host)
    assert code == exitcodes.EXIT_ENDPOINT
    assert "the host refused: host error (HTTP 200): Invalid API key [redacted]" in out
    assert len(host.bodies) == 1
    assert key not in out


# ---- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (b'{"status": "error", "message": "Insufficient credit"}', "fatal", "Insufficient credit"),
        (b'{"status": "error", "messege": "Invalid Api Key"}', "fatal", "Invalid Api Key"),
        (b'{"error": {"message": "upstream timeout", "code": 502}}', "failed", "upstream timeout"),
        (b'{"choices": [{"finish_reason": "error", "error": {"message": "provider down"}}]}', "failed",
         "provider down"),
        (b'{"choices": [{"finish_reason": "stop", "message": {"content": "0"}}]}', "answer", None),
        (b'not json', "failed", None),
        (b'[1]', "failed", None),
    ],
)
def test_errors_sent_inside_a_200_are_read_as_errors(body: bytes, kind: str, message: str | None) -> None:
    attempt = read_reply(200, {}, body, now=0.0).attempt
    assert attempt.kind == kind
    if message is not None:
        assert message in (attempt.error or "")


def test_exit_code_is_the_most_serious_failure() -> None:
    ok, info = CheckResult("a", True, ""), CheckResult("b", None, "")
    assert exit_code([ok, info]) == 0
    assert exit_code([ok, CheckResult("c", False, "", 1), CheckResult("d", False, "", 4)]) == 4
    assert exit_code([CheckResult("c", False, "", 4), CheckResult("k", False, "", 2)]) == 2


def test_table_blanks_the_secret_and_marks_results() -> None:
    table = format_table([CheckResult("key", False, f"rejected {KEY}", 4), CheckResult("rate limits", None, "-")],
                         secret=KEY)
    assert KEY not in table and "[redacted]" in table
    assert "FAIL" in table and "info" in table


def test_rate_limit_headers_are_picked_case_blind() -> None:
    headers = {"Retry-After": "3", "X-RateLimit-Reset-Tokens": "2m59.56s", "Server": "x"}
    assert rate_limit_headers(headers) == {"retry-after": "3", "x-ratelimit-reset-tokens": "2m59.56s"}


# ---- command line --------------------------------------------------------------------------------


def test_check_command_against_the_built_in_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--provider", "simulator", "--policy", "spam"]) == exitcodes.EXIT_OK
    assert "canary spam" in capsys.readouterr().out


def test_check_command_config_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--base-url", "ftp://example.com/v1"]) == exitcodes.EXIT_USAGE
    assert "'endpoint.base_url' must start with http://" in capsys.readouterr().err


def test_run_preflight_stops_before_the_run_when_the_check_fails(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    code = main(["run", "--preflight", "--input", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"),
                 "--base-url", "http://127.0.0.1:9/v1", "--policy", "spam", "--no-progress"])
    assert code == exitcodes.EXIT_ENDPOINT
    assert not (tmp_path / "out").exists()


def test_run_preflight_runs_the_job_when_the_check_passes(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    code = main(["run", "--preflight", "--provider", "simulator", "--input", str(tmp_path / "in.jsonl"),
                 "--out", str(tmp_path / "out"), "--policy", "spam", "--no-progress"])
    assert code == exitcodes.EXIT_OK
    assert (tmp_path / "out" / "labels").is_dir()


def test_vllm_queue_gauges_are_shown_for_openai_hosts() -> None:
    """A vLLM-shaped host: /v1/models, /v1/chat/completions and /metrics."""
    content = orjson.dumps({"violation": 0, "policy_category": None, "rule_ids": [], "confidence": "low",
                            "rationale": "fine"}).decode()

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": SIM_MODEL}]})

    async def chat(request: web.Request) -> web.Response:
        return web.json_response({"choices": [{"message": {"content": content}, "finish_reason": "stop"}]})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text='vllm:num_requests_waiting{engine="0"} 3.0\nvllm:num_requests_running 7.0\n')

    async def go() -> tuple[int, str]:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/metrics", metrics)
        async with serve_app(app) as root:
            out = io.StringIO()
            code = await check_async(make(base_url=root + "/v1"), stream=out)
            return code, out.getvalue()

    code, out = asyncio.run(go())
    assert code == exitcodes.EXIT_OK, out
    row = next(line.split() for line in out.splitlines() if "vllm metrics" in line)
    assert row == ["vllm", "metrics", "info", "waiting=3", "running=7"]
    assert "no usage sent" in out


def test_a_server_without_vllm_metrics_says_so(key: str) -> None:
    code, out, _ = check(make())
    assert code == exitcodes.EXIT_OK
    assert "none at /metrics" in out


def test_check_reads_the_canary_with_the_policys_own_labels(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    policy = Path(__file__).resolve().parents[1] / "data" / "spam_severity" / "policy.txt"
    config = tmp_path / "own.toml"
    config.write_text(f"""[policies]
files = ["{policy}"]
output_format = "policy"
label_pattern = 'D-(SP\\d)'
violation_pattern = 'SP[2-4]'
[endpoint]
provider = "simulator"
[simulator]
answer_templates = [["Spam Policy (#SP)", "D-{{rule}}, R-SP0", "D-SP0, R-SP0"]]
""")
    assert main(["check", str(config)]) == exitcodes.EXIT_OK
    assert "canary policy  ok      violation=1 SP2" in capsys.readouterr().out


def test_check_tries_each_endpoint_and_names_it_in_every_row(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config.settings import EndpointSpec

    monkeypatch.setenv("SECOND_KEY", "sk-second-key-0123")

    async def go() -> tuple[int, str, int, int]:
        async with start_simulator(SimulatorConfig()) as good, \
                start_simulator(SimulatorConfig(api_key="sk-the-right-one")) as refusing:
            config = make(policies=["spam"], endpoints=[
                EndpointSpec(name="pool", base_url=good.base_url, model=SIM_MODEL),
                EndpointSpec(name="overflow", base_url=refusing.base_url, model=SIM_MODEL, api_key_env="SECOND_KEY")])
            out = io.StringIO()
            code = await check_async(config, stream=out)
            return code, out.getvalue(), good.stats.requests, refusing.stats.requests

    code, out, good_calls, refused_calls = asyncio.run(go())
    assert code == exitcodes.EXIT_ENDPOINT, out
    assert (good_calls, refused_calls) == (1, 1)
    assert "endpoint pool: openai at" in out and "endpoint overflow: openai at" in out
    assert any(line.split()[:4] == ["pool:", "canary", "spam", "ok"] for line in out.splitlines()), out
    assert any(line.split()[:3] == ["overflow:", "key", "FAIL"] for line in out.splitlines()), out
    assert "sk-second-key-0123" not in out
