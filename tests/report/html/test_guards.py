"""The report's nightly sections: sample, canaries, drift, self-hosted cost; hostile text is escaped."""

from __future__ import annotations

from pipeline.report.html.guards import sections

CANARIES = {"total": 2, "passed": 1, "wrong": 1, "unanswered": 0, "run_id": "r1", "cost_usd": 0.001,
            "per_policy": {"spam": {"total": 2, "passed": 1, "wrong": 1, "unanswered": 0}},
            "failures": [{"where": "c:0", "policy": "spam", "text": "<script>alert(1)</script>", "expected": 0,
                          "got": 1}]}
DRIFT = {"threshold": 0.05, "runs": 2, "flagged": "drift: spam 10.0% -> 40.0% (+30.0 pts vs 2 earlier runs)",
         "policies": [{"policy": "spam", "rate": 0.4, "baseline": 0.1, "shift": 0.3, "labels": 100,
                       "baseline_labels": 200, "runs": 2, "flagged": True}]}
SAMPLE = {"seed": 7, "rate": 0.1, "input_rows": 1000, "sampled_rows": 100,
          "cost_usd_in_input": {"estimate": 1.0, "low": 0.9, "high": 1.1},
          "per_policy": {"spam": {"labelled_ok": 100, "violations": 10,
                                  "violations_in_input": {"estimate": 100.0, "low": 55, "high": 174, "rate": 0.1}}}}


def test_every_section_shows_its_figures_and_escapes_canary_texts() -> None:
    page = sections({"sample": SAMPLE, "canaries": CANARIES, "drift": DRIFT, "cost_per_1000_labels": 0.02,
                     "self_hosted": {"gpu_hour_usd": 2.0, "wall_seconds": 36.0, "cost_usd": 0.02,
                                     "per_1000_labels": 0.01}})
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "1 of 2 canaries got the wrong verdict" in page
    assert "<b>100</b> of 1,000 input rows" in page and "55 – 174" in page and "$1.0000" in page
    assert "+30.00 pts" in page and "drift: spam 10.0% -&gt; 40.0%" in page
    assert "$0.010000" in page and "$0.020000" in page


def test_sections_a_run_did_not_use_say_how_to_turn_them_on() -> None:
    page = sections({"sample": None, "canaries": None, "drift": {"policies": []}, "self_hosted": None})
    assert "--canaries FILE" in page and "No earlier run" in page
    assert "Sample" not in page and "Self-hosted" not in page
