"""`OUT/report.html`: written by every run and by `moderate report`, self-contained, hostile text
escaped, and loaded in a real headless browser (Debian's chromium) with no console error."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest
from support import make_config, read_only, run_pipeline, write_jsonl

from pipeline.audit.evaluate import evaluate as run_eval
from pipeline.cli.main import main
from pipeline.report.html import browser, write_html_report

CHROMIUM = Path("/usr/bin/chromium")
CHARTS = ("violation-rate", "categories", "cost", "latency", "throughput", "statuses", "eval", "confusion-spam",
          "answer-length", "spend")
SECTIONS = ("headline", "evaluation", "browser")
HOSTILE = ['buy now <script>alert("pwned")</script>', 'click here <img src=x onerror="alert(1)">',
           "you people are vermin </td></tr></table><iframe src='http://evil.example/'>", "hello there"]


class Elements(HTMLParser):
    """Start tags and their attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(html)
    return parser.tags


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile")
    rows = [{"id": f"<b>{i}</b>" if i % 5 == 0 else f"r{i}", "text": HOSTILE[i % len(HOSTILE)] + f" #{i}",
             "gold": int(i % 4 != 3)} for i in range(40)]
    data = write_jsonl(tmp / "hostile.jsonl", rows)
    # a canary the simulator gets "wrong" puts hostile text in the canary section too
    canaries = write_jsonl(tmp / "canaries.jsonl", [{"text": HOSTILE[0], "policy": "spam", "violation": 0}])
    config = make_config(tmp, [data], canaries=str(canaries), gpu_hour_usd=1.0, keep_columns=["gold"])
    result = run_pipeline(config)
    assert result.code == 6, result.stderr
    run_eval(result.out, truth=str(data), id_column="id", label_columns=["gold"])
    return result.out


def test_every_run_writes_the_report(hostile_run: Path) -> None:
    html = (hostile_run / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    names = {attrs.get("data-chart") for tag, attrs in elements(html) if tag == "figure"}
    assert set(CHARTS) <= names


def test_hostile_text_is_escaped_and_the_page_loads_nothing(hostile_run: Path) -> None:
    html = (hostile_run / "report.html").read_text()
    tags = elements(html)
    assert not [t for t, _ in tags if t in ("img", "iframe", "link", "object", "embed")]
    # the label browser: a data block that is never run, and one script the CSP allows by its hash
    assert [attrs for t, attrs in tags if t == "script"] == [{"type": "application/json", "id": "label-data"}, {}]
    assert html.count("<script") == 2 and html.count("</script") == 2
    assert browser.script_hash() in html and "'unsafe-inline'" not in html.split("script-src", 1)[1].split('"')[0]
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html  # shown, as text
    assert "&lt;b&gt;0&lt;/b&gt;" in html  # a hostile id
    assert "1 of 1 canaries got the wrong verdict" in html and "Self-hosted cost" in html
    markup, block = re.subn(r'<script type="application/json" id="label-data">[^<]*</script>', "", html)
    assert block == 1  # the embedded labels hold no "<" at all: no text can close or open a tag there
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup)


def test_long_texts_are_shortened(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "long.jsonl", [{"id": "a", "text": "buy now " + "x" * 5000}])
    config = make_config(tmp_path, [data], policies=["spam"])
    assert run_pipeline(config).code == 0
    html = Path(config.out, "report.html").read_text()
    markup = re.sub(r'<script type="application/json" id="label-data">[^<]*</script>', "", html)
    assert "x" * 400 not in markup and "x" * 250 in markup  # tables
    assert "x" * 2000 not in html and "x" * 1900 in html  # the label browser's detail


def test_report_command_rewrites_it_and_prints_the_path(hostile_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (hostile_run / "report.html").unlink()
    assert main(["report", str(hostile_run)]) == 0
    assert capsys.readouterr().out.strip() == str(hostile_run / "report.html")
    assert (hostile_run / "report.html").exists()


def test_report_of_a_directory_without_a_run_is_one_line_exit_2(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cost_report.json" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("cost_report", [b"[]", b"not json", b'"a string"'])
def test_report_of_a_directory_with_an_odd_cost_report_is_one_line_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], cost_report: bytes) -> None:
    (tmp_path / "cost_report.json").write_bytes(cost_report)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'cost_report.json'}: cannot read" in err and len(err.strip().splitlines()) == 1


def test_reports_written_at_once_on_one_directory_all_succeed(hostile_run: Path) -> None:
    """Each writer has a temp file of its own: none renames another's away or finds its own gone."""
    truth = str(hostile_run.parent / "hostile.jsonl")
    commands = [["report", str(hostile_run)], ["eval", str(hostile_run), "--truth", truth, "--id-column", "id",
                                               "--label-column", "gold", "--bootstrap", "20"]] * 3
    start = threading.Barrier(len(commands))

    def one(argv: list[str]) -> int:
        start.wait()
        return sum(main(argv) for _ in range(4))

    with ThreadPoolExecutor(len(commands)) as pool:
        codes = list(pool.map(one, commands))
    assert codes == [0] * len(commands)
    assert not list(hostile_run.glob(".*.tmp"))
    assert (hostile_run / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert orjson.loads((hostile_run / "eval.json").read_bytes())["bootstrap"] == 20


def test_report_and_eval_in_a_read_only_folder_are_one_line_exit_2(hostile_run: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "out"
    shutil.copytree(hostile_run, copy)
    truth = str(hostile_run.parent / "hostile.jsonl")
    with read_only(copy):
        assert main(["report", str(copy)]) == 2
        assert main(["eval", str(copy), "--truth", truth, "--id-column", "id", "--label-column", "gold"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"moderate: error: {copy / 'report.html'}: cannot write (Operation not permitted)",
                     f"moderate: error: {copy / 'eval.json'}: cannot write (Operation not permitted)"] \
        or all(line.endswith("cannot write (Permission denied)") for line in lines), lines


def test_eval_results_appear_in_the_report(hostile_run: Path) -> None:
    html = write_html_report(hostile_run).read_text()
    evaluation = orjson.loads((hostile_run / "eval.json").read_bytes())
    precision = evaluation["policies"]["spam"]["precision"]
    assert f"{precision:.3f}" in html


# -- a real browser ----------------------------------------------------------------------------

def _chromium(page: Path, *action: str, fragment: str = "") -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} not found: the browser test needs Debian's chromium (apt-get install chromium)")
    profile = page.parent / ".chromium-profile"
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-extensions", "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr",
         "--v=0", "--window-size=1400,900", *action, page.as_uri() + fragment],
        capture_output=True, text=True, timeout=120, check=False)


def screenshot(page: Path, png: Path) -> None:
    """The first screen at 1,400 px wide, as a person opening the report sees it."""
    proc = _chromium(page, f"--screenshot={png}")
    assert proc.returncode == 0, proc.stderr[-2000:]


def load_in_chromium(page: Path, fragment: str = "") -> tuple[str, list[str]]:
    """The DOM after load (and after the label browser applied ``fragment``'s filters) and the console
    messages, from headless chromium (no network)."""
    proc = _chromium(page, "--dump-dom", fragment=fragment)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


@pytest.mark.slow
def test_report_loads_in_a_browser_with_every_section_no_console_error_and_working_filters(hostile_run: Path,
                                                                                          tmp_path: Path) -> None:
    page = hostile_run / "report.html"
    dom, console = load_in_chromium(page)
    assert console == []
    tags = elements(dom)
    charts = {attrs.get("data-chart"): attrs for tag, attrs in tags if tag == "figure"}
    assert set(CHARTS) <= set(charts)
    assert {attrs.get("id") for tag, attrs in tags if tag == "section"} >= set(SECTIONS)
    assert sum(1 for tag, _ in tags if tag == "svg") >= len(CHARTS)
    assert not [t for t, _ in tags if t in ("iframe", "img")]
    (body,) = [attrs for tag, attrs in tags if tag == "body"]
    assert int(body["data-page-width"] or 0) <= 1400  # nothing wider than the window at 1,400 px
    everything = _matching(tags)
    assert everything == 80 and _rows(dom) == 80  # every label of the run is in the browser
    spam_flagged, _ = load_in_chromium(page, "#policy=spam&verdict=1")
    assert 0 < _matching(elements(spam_flagged)) < everything
    assert "&lt;script&gt;alert(" in spam_flagged  # hostile text arrives as text, never as markup
    searched, _ = load_in_chromium(page, "#q=vermin")
    assert _matching(elements(searched)) == 20
    shot = tmp_path / "report.png"
    screenshot(page, shot)
    assert shot.stat().st_size > 10_000


def _matching(tags: list[tuple[str, dict[str, str | None]]]) -> int:
    (table,) = [attrs for tag, attrs in tags if tag == "table" and attrs.get("id") == "lb-table"]
    return int(table["data-matching"] or -1)


def _rows(dom: str) -> int:
    return dom.split('id="lb-rows"', 1)[1].split("</tbody>", 1)[0].count("<tr")


@pytest.mark.slow
def test_the_browser_check_sees_console_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('broken page')</script></body></html>")
    _, console = load_in_chromium(bad)
    assert any("broken page" in line for line in console)


def test_texts_come_from_the_runs_own_text_column_and_survive_a_rewrite(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "body.jsonl", [{"id": "a", "body": "buy now, said the stranger"}])
    config = make_config(tmp_path, [data], policies=["spam"], text_column="body")
    assert run_pipeline(config).code == 0
    report = Path(config.out, "report.html")
    assert "buy now, said the stranger" in report.read_text()
    write_html_report(config.out)  # as `moderate report OUT` and `moderate eval` rewrite it
    assert "buy now, said the stranger" in report.read_text()
