"""The SVG charts: escaped labels, whiskers for intervals, well-formed XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pipeline.report.html import svg

HOSTILE = '<script>alert("x")</script>&'


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # a figure with an svg inside: must be well-formed XML


def test_every_chart_is_well_formed_and_escapes_its_labels() -> None:
    charts = [
        svg.hbars("a", HOSTILE, [(HOSTILE, 0.2, (0.1, 0.3)), ("b", 0.0, None)], as_percent=True),
        svg.stacked_bars("b", "t", [(HOSTILE, (1.0, 2.0, 3.0))], ["in", "cached", HOSTILE]),
        svg.columns("c", "t", [(0.0, 1.0, 3), (1.0, 2.0, 0)], x_label=HOSTILE),
        svg.line("d", "t", [(0.0, 1.0), (1.0, 3.0)], x_label=HOSTILE, y_label="y"),
    ]
    for chart in charts:
        root = parse(chart)
        assert root.tag == "figure"
        assert "<script" not in chart
        assert root.find("{http://www.w3.org/2000/svg}svg") is not None


def test_interval_whiskers_are_drawn_only_where_given() -> None:
    chart = svg.hbars("a", "t", [("x", 0.2, (0.1, 0.3)), ("y", 0.5, None)])
    assert chart.count('class="ci"') == 1


def test_empty_charts_still_render() -> None:
    for chart in (svg.hbars("a", "t", []), svg.columns("c", "t", [], x_label="x"),
                  svg.line("d", "t", [], x_label="x", y_label="y"), svg.stacked_bars("b", "t", [], ["p"])):
        parse(chart)


def test_long_labels_are_shortened() -> None:
    assert svg.esc("x" * 50, 10) == "x" * 9 + "…"

