"""Loading policy files, and the shape of the policies shipped in configs/policies."""

from __future__ import annotations

import os
import re
from pathlib import Path

import bpe_openai
import pytest

from pipeline.core.records import ANSWER_FORMATS, OutputFormat
from pipeline.plan.policies import (
    PolicyError,
    builtin_policy_dir,
    builtin_policy_files,
    format_warnings,
    load_policies,
    load_policy,
)
from pipeline.plan.prompt import FORMAT_MARKER, render_system

SHIPPED = ("spam", "hate_harassment", "self_harm", "sexual_minors")
SECTIONS = ("## INSTRUCTIONS", "## DEFINITIONS", "## VIOLATES (1)", "## SAFE (0)", "## EXAMPLES")
RULE_PREFIX = {"spam": "SP", "hate_harassment": "HH", "self_harm": "SH", "sexual_minors": "CS"}
EXAMPLE = re.compile(r"^- Content: .+ → violation ([01])(?: \(([A-Z]+\d+)\))?$")


@pytest.fixture(scope="module")
def encoding() -> bpe_openai.Encoding:
    return bpe_openai.get_encoding("o200k_base")


def _section(text: str, heading: str) -> str:
    start = text.index(heading) + len(heading)
    end = text.find("\n## ", start)
    return text[start:] if end == -1 else text[start:end]


# --- loading -------------------------------------------------------------------------------


def test_name_is_file_stem_and_text_is_file_content(tmp_path: Path) -> None:
    path = tmp_path / "fraud.md"
    path.write_text("# Fraud\nRules here.\n", encoding="utf-8")
    policy = load_policy(path)
    assert policy.name == "fraud"
    assert policy.text == "# Fraud\nRules here.\n"


def test_accepts_string_paths(tmp_path: Path) -> None:
    path = tmp_path / "fraud.md"
    path.write_text("Rules.", encoding="utf-8")
    assert load_policy(str(path)).name == "fraud"


def test_version_changes_when_text_changes(tmp_path: Path) -> None:
    path = tmp_path / "fraud.md"
    path.write_text("Rules, first draft.", encoding="utf-8")
    first = load_policy(path).version
    assert load_policy(path).version == first
    path.write_text("Rules, second draft.", encoding="utf-8")
    assert load_policy(path).version != first


def test_version_does_not_depend_on_file_location(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "p.md").write_text("Same rules.", encoding="utf-8")
    (tmp_path / "b" / "p.md").write_text("Same rules.", encoding="utf-8")
    assert load_policy(tmp_path / "a" / "p.md").version == load_policy(tmp_path / "b" / "p.md").version


def test_utf8_text_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "intl.md"
    path.write_text("Règles: « pas de spam » ✅", encoding="utf-8")
    assert load_policy(path).text == "Règles: « pas de spam » ✅"


def test_bare_name_resolves_to_shipped_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    policy = load_policy("spam")
    assert policy.name == "spam"
    assert policy.text == (builtin_policy_dir() / "spam.md").read_text(encoding="utf-8")


def test_existing_path_wins_over_shipped_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("spam").write_text("My own spam rules.", encoding="utf-8")
    assert load_policy("spam").text == "My own spam rules."


def test_builtin_policy_dir_holds_the_shipped_policies() -> None:
    names = {p.name.removesuffix(".md") for p in builtin_policy_dir().iterdir()}
    assert set(SHIPPED) <= names


def test_builtin_policy_files_load_as_the_shipped_policies_in_name_order() -> None:
    policies = load_policies(builtin_policy_files())
    assert [p.name for p in policies] == sorted(SHIPPED)
    assert policies == load_policies(sorted(SHIPPED))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"  \n\t\n", "empty"), (b"Caf\xe9 rules", "UTF-8")],
    ids=["empty", "whitespace-only", "latin-1"],
)
def test_unusable_file_is_an_error_naming_it(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.md"
    path.write_bytes(content)
    with pytest.raises(PolicyError, match=message) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.md"
    with pytest.raises(PolicyError, match="not found") as info:
        load_policy(path)
    assert str(path) in str(info.value)


def test_unknown_bare_name_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError, match="no_such_policy"):
        load_policy("no_such_policy")


def test_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="directory") as info:
        load_policy(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs file permissions to apply")
def test_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "locked.md"
    path.write_text("Rules.", encoding="utf-8")
    path.chmod(0)
    try:
        with pytest.raises(PolicyError, match="cannot read") as info:
            load_policy(path)
    finally:
        path.chmod(0o600)
    assert str(path) in str(info.value)


def test_load_policies_keeps_order() -> None:
    assert [p.name for p in load_policies(["self_harm", "spam"])] == ["self_harm", "spam"]


def test_duplicate_policy_names_are_an_error_naming_both(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "spam.md", tmp_path / "b" / "spam.md"
    first.write_text("One.", encoding="utf-8")
    second.write_text("Two.", encoding="utf-8")
    with pytest.raises(PolicyError, match="duplicate policy name 'spam'") as info:
        load_policies([first, second])
    assert str(first) in str(info.value)
    assert str(second) in str(info.value)


def test_load_policies_reports_the_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "empty.md"
    bad.write_text("", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"empty\.md"):
        load_policies(["spam", bad])


# --- the shipped policies ------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_has_title_and_every_section_in_order(name: str) -> None:
    text = load_policy(name).text
    assert text.startswith("# ")
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_states_the_format_in_instructions_and_before_examples(name: str) -> None:
    text = load_policy(name).text
    assert text.count(FORMAT_MARKER) == 2
    assert FORMAT_MARKER in _section(text, "## INSTRUCTIONS")
    assert FORMAT_MARKER in _section(text, "## SAFE (0)")  # the last section before EXAMPLES


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_examples_are_labelled_and_cite_defined_rules(name: str) -> None:
    text = load_policy(name).text
    prefix = RULE_PREFIX[name]
    defined = set(re.findall(rf"\*\*({prefix}\d+)\*\*", _section(text, "## VIOLATES (1)")))
    assert len(defined) >= 4
    lines = [line for line in _section(text, "## EXAMPLES").splitlines() if line.strip()]
    assert 4 <= len(lines) <= 6
    labels = set()
    for line in lines:
        match = EXAMPLE.match(line)
        assert match, line
        label, rule = match.groups()
        labels.add(label)
        assert (rule is not None) == (label == "1"), line
        assert rule is None or rule in defined, line
    assert labels == {"0", "1"}


@pytest.mark.parametrize("output_format", ANSWER_FORMATS)
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_renders_to_400_to_600_tokens(
    name: str, output_format: OutputFormat, encoding: bpe_openai.Encoding
) -> None:
    system = render_system(load_policy(name), output_format)
    assert FORMAT_MARKER not in system
    assert 400 <= len(encoding.encode(system)) <= 600


def test_sexual_minors_policy_contains_no_explicit_terms() -> None:
    text = load_policy("sexual_minors").text.lower()
    explicit = ("nude", "naked", "porn", "genital", "erotic", "intercourse", "orgasm", "breast", "undress")
    found = [term for term in explicit if re.search(rf"\b{term}", text)]
    assert found == []


# ---- policies with an answer format of their own -----------------------------------------------------

SEVERITY_POLICY = Path(__file__).resolve().parents[1] / "data" / "spam_severity" / "policy.txt"


def test_a_policy_with_its_own_format_and_no_marker_is_warned_about_naming_the_file() -> None:
    policy = load_policy(SEVERITY_POLICY)
    lines = format_warnings([SEVERITY_POLICY], [policy], OutputFormat.RATIONALE)
    assert len(lines) == 1
    assert str(SEVERITY_POLICY) in lines[0] and "--output-format policy" in lines[0] and "\n" not in lines[0]


def test_policies_with_the_marker_or_sent_as_written_get_no_warning() -> None:
    assert format_warnings(["spam"], [load_policy("spam")], OutputFormat.RATIONALE) == []
    policy = load_policy(SEVERITY_POLICY)
    assert format_warnings([SEVERITY_POLICY], [policy], OutputFormat.POLICY) == []


def test_the_marker_in_a_policy_sent_as_written_is_refused() -> None:
    with pytest.raises(PolicyError, match="OUTPUT_FORMAT"):
        format_warnings(["spam"], [load_policy("spam")], OutputFormat.POLICY)
