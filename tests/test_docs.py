"""Docs stay honest: every `moderate …` command line in README.md and docs/*.md parses with the real
argument parser (a renamed or removed flag breaks this test, not a reader's cron job), and the ones
that need no real host, key, GPU or cluster run as written, section by section, in a fresh folder
holding the repository's configs/ and data/, with hosted configs pointed at one simulator."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import SIM_MODEL, SimulatorProcess

from pipeline.cli.main import main, parse

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: where a command line ends: shell operators, redirections and comments
_END = re.compile(r"\s(?:>>?|2>>?|2>&1|\|\|?|&&|&|;|#)(?:\s|$)")  # redirections, pipes, lists, background
_COMMAND = re.compile(r"(?:^|[\s/])(?:moderate|python -m pipeline)\s+"
                      r"(?=(?:run|check|simulate|estimate|eval|report|export|batch)(?:\s|$))")
_HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")
_CAT_TO_FILE = re.compile(r"^cat\s+>\s*(\S+)\s+<<")
_ENV_PREFIX = re.compile(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=(\S*)(?=\s)")


@dataclass
class Command:
    where: str                  # file:line
    words: str                  # what follows `moderate`
    env: dict[str, str] = field(default_factory=dict)   # `NAME=value moderate …`
    background: bool = False    # the line ends with `&`


@dataclass
class FileWrite:
    """`cat > FILE <<'TAG'` … `TAG`: a file the section writes before its next command."""
    target: str
    text: str


@dataclass
class Section:
    where: str                  # file#heading
    steps: list[Command | FileWrite] = field(default_factory=list)


def doc_sections(path: Path) -> list[Section]:
    """The commands (and files written by here-documents) of every fenced shell or crontab block, by heading."""
    sections = [Section(f"{path.name}#top")]
    fence, pending, heredoc = None, "", None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if heredoc is not None:  # the body of a here-document: kept (cat > FILE) or skipped, never a command
            tag, target, body = heredoc
            if raw.strip() == tag:
                if target is not None:
                    sections[-1].steps.append(FileWrite(target, "".join(line + "\n" for line in body)))
                heredoc = None
            else:
                body.append(raw)
            continue
        if fence is None and raw.startswith("#"):
            sections.append(Section(f"{path.name}#{raw.lstrip('#').strip()}"))
        if raw.endswith("\\") and fence is not None:  # a command continued on the next line
            pending += raw[:-1] + " "
            continue
        line, pending = pending + raw, ""
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is None or fence not in ("bash", "sh", "crontab", "console", ""):
            continue
        if (opened := _HEREDOC.search(line)) is not None:
            target = _CAT_TO_FILE.match(line.strip())
            heredoc = (opened.group(1), target.group(1) if target else None, [])
        match = _COMMAND.search(line)
        if match is None:
            continue
        rest = line[match.end():]
        rest = re.sub(r"\$\([^)]*\)", "X", rest).replace("\\%", "%")
        cut = _END.search(" " + rest)
        words = rest[: cut.start() - 1] if cut else rest
        env = dict(_ENV_PREFIX.findall(" " + line[: match.start() + 1] + " "))
        sections[-1].steps.append(Command(f"{path.name}:{number}", words, env, line.rstrip().endswith("&")))
    return [section for section in sections if section.steps]


SECTIONS = [section for path in DOCS for section in doc_sections(path)]


def command_lines() -> list[tuple[str, str]]:
    """(file:line, the words after `moderate`) of every command in a fenced shell or crontab block."""
    return [(step.where, step.words) for section in SECTIONS for step in section.steps if isinstance(step, Command)]


COMMANDS = command_lines()


def test_the_docs_hold_command_lines_to_check() -> None:
    assert len(COMMANDS) >= 20
    assert any("--alert-webhook" in words for _, words in COMMANDS)


@pytest.mark.parametrize(("where", "words"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_command_line_in_the_docs_parses(where: str, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        parse(shlex.split(words))
    except SystemExit as exc:
        pytest.fail(f"{where}: moderate {words}: {capsys.readouterr().err.strip().splitlines()[-1:]} ({exc.code})")


def test_a_doc_section_keeps_its_commands_files_and_environment(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("""# Try it
```bash
moderate simulate --port 8100 &
cat > /tmp/x.toml <<'TOML'
[output]
dir = "moderate run not-a-command"
TOML
FREE_KEY=demo moderate run /tmp/x.toml \\
    --force   # a comment
```
""", encoding="utf-8")
    (section,) = doc_sections(doc)
    simulate, written, run = section.steps
    assert simulate == Command("doc.md:3", "simulate --port 8100", {}, background=True)
    assert written == FileWrite("/tmp/x.toml", '[output]\ndir = "moderate run not-a-command"\n')
    assert (run.where, shlex.split(run.words), run.env, run.background) == (
        "doc.md:9", ["run", "/tmp/x.toml", "--force"], {"FREE_KEY": "demo"}, False)


# ---- running them ----------------------------------------------------------------------------------

#: commands that cannot run here, found by a piece of their text, and why
NOT_RUN = {
    "/data/ugc/": "cron on a production host: /opt/moderate, /etc/moderate.env, /data, a webhook",
    "--engine ray": "starts or joins a Ray cluster: tens of seconds and most of a small machine's memory "
                    "(tests/engines/ray run the engine)",
    "s3://": "needs an S3 bucket (tests/output run s3:// against moto)",
    "spam-sp": "downloads OpenAI's policy and golden set (network); tests/endtoend/test_policy_labels.py runs "
               "this recipe with a stand-in of the same shape",
}
#: a step the docs leave to a tool that is not here (vLLM on a GPU node, a host's batch API), before the command
STAND_INS = {
    "batch ingest out/job results.jsonl": "simulate --batch requests.jsonl -o results.jsonl --profile vllm",
    "batch ingest out/job results.jsonl errors.jsonl":
        "simulate --batch requests.jsonl -o results.jsonl --errors errors.jsonl",
    "batch ingest out/batch results.jsonl errors.jsonl":
        "simulate --batch requests.jsonl -o results.jsonl --errors errors.jsonl",
}
#: exit codes other than 0 that the docs lead to
EXPECTED_CODES = {
    "batch ingest out/batch-demo": 1,  # --error-5xx 0.02 leaves some requests batch_failed, for `run` to send
}
#: what a command's output must say, as the docs say it does
CLAIMS = {
    "run /tmp/overflow-demo.toml": ["endpoint free:", "out of service for the rest of this run; continuing on pool"],
    "run configs/groq.toml --force": ["76 from store"],
    "check configs/modelslab.toml": ["all checks passed (exit 0)"],
}
#: a command for a real host: pointed at the simulator as docs/simulator.md and the README say
_HOSTED = re.compile(r"configs/(?!demo\.toml)[\w./-]+\.toml|--provider\s+(?!simulator)")
_NETWORK = re.compile(r"^(?:run|check|batch prepare)\s")


def _not_run(words: str) -> str | None:
    return next((why for piece, why in NOT_RUN.items() if piece in words), None)


RUNNABLE = [s for s in SECTIONS
            if any(isinstance(c, Command) and _not_run(c.words) is None for c in s.steps)]


def test_every_command_line_of_the_docs_runs_or_says_why_not() -> None:
    skipped = [(s.where, c.where) for s in SECTIONS for c in s.steps
               if isinstance(c, Command) and _not_run(c.words) is not None]
    ran = [c.where for s in RUNNABLE for c in s.steps if isinstance(c, Command) and _not_run(c.words) is None]
    assert len(ran) >= 25 and len(skipped) <= 10, (ran, skipped)
    for section in SECTIONS:  # a section runs whole or not at all: a skipped step would leave the next without input
        reasons = {_not_run(c.words) for c in section.steps if isinstance(c, Command)}
        assert len(reasons) == 1 or None not in reasons, f"{section.where}: only part of it can run: {reasons}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _words(command: Command, replace: dict[str, str], simulator: str) -> list[str]:
    words = command.words.strip()
    for old, new in replace.items():
        words = words.replace(old, new)
    argv = shlex.split(words)
    if _NETWORK.match(words) and (_HOSTED.search(words) or ".toml" not in words):
        argv += ["--base-url", simulator, "--model", SIM_MODEL, "--rpm", "0", "--tpm", "0"]
    return argv


def _moderate(argv: list[str], cwd: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run one command line: in this process (no second start-up of Python per command), `simulate` apart."""
    if argv[0] == "simulate":  # serves until its time is up: a process of its own
        done = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=cwd, env={**os.environ, **env},
                              capture_output=True, text=True, timeout=180)
        return done.returncode, done.stdout + done.stderr
    with monkeypatch.context() as patch:
        patch.chdir(cwd)
        for name, value in env.items():
            patch.setenv(name, value)
        capsys.readouterr()
        code = main(argv)
        said = capsys.readouterr()
    return code, said.out + said.err


@pytest.fixture(scope="module")
def simulator() -> str:
    with SimulatorProcess() as sim:
        yield sim.base_url


@pytest.mark.slow
@pytest.mark.parametrize("section", RUNNABLE, ids=[s.where for s in RUNNABLE])
def test_the_command_lines_of_the_docs_run_as_written(section: Section, simulator: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(REPO / "configs", tmp_path / "configs")  # configs/policies is a link: copied as files
    shutil.copytree(REPO / "data", tmp_path / "data")
    env = {"PYTHONPATH": str(REPO), "MODERATION_API_KEY": "docs-test-key-0123456789"}
    replace = {"/tmp/": f"{tmp_path}/"}
    servers: list[subprocess.Popen[str]] = []
    try:
        for step in section.steps:
            if isinstance(step, FileWrite):
                text = step.text
                for old, new in replace.items():
                    text = text.replace(old, new)
                target = Path(step.target.removeprefix("/tmp/"))
                assert not target.is_absolute() and ".." not in target.parts, f"{section.where}: writes {target}"
                (tmp_path / target).write_text(text, encoding="utf-8")
                continue
            if stand_in := STAND_INS.get(step.words.strip()):
                code, said = _moderate(shlex.split(stand_in), tmp_path, env, monkeypatch, capsys)
                assert code == 0, f"stand-in for {step.where}: {said[-2000:]}"
            if step.background:  # a server the section starts: on a free port, and ready before the next step
                port = re.search(r"--port\s+(\d+)", step.words)
                if port:
                    replace[f":{port.group(1)}/"] = f":{_free_port()}/"
                    replace[f"--port {port.group(1)}"] = "--port " + replace[f":{port.group(1)}/"][1:-1]
                server = subprocess.Popen([sys.executable, "-m", "pipeline", *_words(step, replace, simulator)],
                                          cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True)
                servers.append(server)
                assert "listening" in (server.stdout.readline() if server.stdout else ""), step.where
                continue
            code, said = _moderate(_words(step, replace, simulator), tmp_path, {**env, **step.env}, monkeypatch, capsys)
            want = next((expected for piece, expected in EXPECTED_CODES.items() if piece in step.words), 0)
            assert code == want, f"{step.where}: moderate {step.words}\n{said[-3000:]}"
            for piece, claims in CLAIMS.items():
                if piece in step.words:
                    assert all(claim in said for claim in claims), f"{step.where}: {claims}\n{said[-3000:]}"
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
