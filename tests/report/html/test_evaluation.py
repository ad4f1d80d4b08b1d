"""The evaluation section: every shape of eval.json's confusion becomes a heat map; mistakes are shown escaped."""

from __future__ import annotations

from pipeline.report.html.evaluation import confusion_matrix, heatmap, section

BINARY = {"policies": {"spam": {"label_column": "gold", "scored": 17, "precision": 0.83, "recall": 0.71,
                                "confusion": {"tp": 5, "fp": 1, "fn": 2, "tn": 9}}}}


def test_binary_multiclass_nested_and_list_confusions_become_matrices() -> None:
    assert confusion_matrix({"confusion": {"tp": 5, "fp": 1, "fn": 2, "tn": 9}}) == (["0", "1"], [[9, 1], [2, 5]])
    assert confusion_matrix({"confusion": {"labels": ["H1", "H2"], "matrix": [[3, 1], [0, 4]]}}) == \
        (["H1", "H2"], [[3, 1], [0, 4]])
    assert confusion_matrix({"confusion": {"a": {"a": 2, "b": 1}, "b": {"b": 3}}}) == (["a", "b"], [[2, 1], [0, 3]])
    assert confusion_matrix({"confusion": [[1, 2], [3, 4]], "per_class": {"x": {}, "y": {}}}) == \
        (["x", "y"], [[1, 2], [3, 4]])
    assert confusion_matrix({"confusion": "garbled"}) == ([], [])


def test_the_heat_map_has_a_cell_per_pair_with_its_count_and_share() -> None:
    svg = heatmap("confusion-spam", "spam", ["0", "1"], [[9, 1], [2, 5]])
    assert svg.count('class="cell"') == 4 and "truth 1, verdict 0: 2 (28.6% of the row)" in svg


def test_false_positives_and_negatives_show_text_and_rationale_escaped() -> None:
    truth = {"spam": {"by_confidence": [{"confidence": "high", "n": 4, "tp": 2, "fp": 1, "fn": 1,
                                         "precision": 2 / 3, "recall": 2 / 3}],
                      "false_positives": [{"id": "<i>x</i>", "category": None, "confidence": "high",
                                           "text": "<script>alert(1)</script>", "rationale": "looks like spam"}],
                      "false_negatives": []}}
    html = section(BINARY, truth)
    assert "data-chart=\"confusion-spam\"" in html and "By confidence level" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html and "looks like spam" in html
    assert "False negatives" in html and "None." in html
