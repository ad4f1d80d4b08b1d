"""Docs stay honest: every `moderate …` command line in README.md and docs/*.md parses with the real
argument parser (a renamed or removed flag breaks this test, not a reader's cron job)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pipeline.cli.main import parse

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: where a command line ends: shell operators, redirections and comments
_END = re.compile(r"\s(?:>>?|2>>?|2>&1|\|\|?|&&|&|;|#)(?:\s|$)")  # redirections, pipes, lists, background
_COMMAND = re.compile(r"(?:^|[\s/])(?:moderate|python -m pipeline)\s+"
                      r"(?=(?:run|check|simulate|estimate|eval|report|export|batch)(?:\s|$))")


def command_lines() -> list[tuple[str, str]]:
    """(file:line, the words after `moderate`) of every command in a fenced shell or crontab block."""
    found = []
    for path in DOCS:
        fence, pending = None, ""
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if raw.endswith("\\") and fence is not None:  # a command continued on the next line
                pending += raw[:-1] + " "
                continue
            line, pending = pending + raw, ""
            if line.startswith("```"):
                fence = None if fence is not None else line[3:].strip()
                continue
            if fence not in ("bash", "sh", "crontab", "console", ""):
                continue
            match = _COMMAND.search(line)
            if match is None or fence is None:
                continue
            rest = line[match.end():]
            rest = re.sub(r"\$\([^)]*\)", "X", rest).replace("\\%", "%")
            cut = _END.search(" " + rest)
            found.append((f"{path.name}:{number}", rest[: cut.start() - 1] if cut else rest))
    return found


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
