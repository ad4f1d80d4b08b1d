"""Inline SVG charts, written directly: pure functions from numbers to markup, no IO, no scripts.

Every label passes through `esc`, so a chart is safe whatever the names in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH = 640
PALETTE = ("#3b6ea5", "#d9822b", "#5b9a5b", "#a33c3c", "#7d5ba6", "#8c6d46", "#c75d9b", "#6b6b6b")


def esc(value: object, limit: int | None = None) -> str:
    """Text for HTML/SVG: shortened to `limit` characters (with …) and escaped."""
    text = "" if value is None else str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return escape(text, quote=True)


def _frame(name: str, title: str, height: int, body: list[str]) -> str:
    return (f'<figure class="chart" data-chart="{esc(name)}"><figcaption>{esc(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title)}" '
            f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">'
            + "".join(body) + "</svg></figure>")


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.2g}"


def hbars(name: str, title: str, rows: Sequence[tuple[str, float, tuple[float, float] | None]], *,
          unit: str = "", as_percent: bool = False) -> str:
    """Horizontal bars, one per (label, value, optional (low, high) interval drawn as a whisker)."""
    left, right, row_h = 170, 90, 24
    height = max(1, len(rows)) * row_h + 30
    top = max([v for _, v, _ in rows] + [hi for _, _, ci in rows if ci for hi in ci[1:]] + [1e-12])
    scale = (WIDTH - left - right) / top
    body = [f'<line x1="{left}" y1="10" x2="{left}" y2="{height - 20}" stroke="#999"/>']
    for i, (label, value, ci) in enumerate(rows):
        y = 10 + i * row_h
        shown = f"{value * 100:.1f}%" if as_percent else _fmt(value) + unit
        body.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{esc(label, 28)}</text>')
        body.append(f'<rect x="{left}" y="{y + 3}" width="{max(value * scale, 0.5):.1f}" height="{row_h - 8}" '
                    f'fill="{PALETTE[i % len(PALETTE)]}"><title>{esc(label)}: {esc(shown)}</title></rect>')
        end = value * scale
        if ci is not None:
            lo, hi = (left + ci[0] * scale, left + ci[1] * scale)
            mid = y + row_h / 2 - 1
            body.append(f'<line class="ci" x1="{lo:.1f}" y1="{mid}" x2="{hi:.1f}" y2="{mid}" stroke="#222"/>'
                        f'<line x1="{lo:.1f}" y1="{mid - 5}" x2="{lo:.1f}" y2="{mid + 5}" stroke="#222"/>'
                        f'<line x1="{hi:.1f}" y1="{mid - 5}" x2="{hi:.1f}" y2="{mid + 5}" stroke="#222"/>')
            end = max(end, ci[1] * scale)
        body.append(f'<text x="{left + end + 6:.1f}" y="{y + 15}">{esc(shown)}</text>')
    return _frame(name, title, height, body)


def stacked_bars(name: str, title: str, rows: Sequence[tuple[str, Sequence[float]]], parts: Sequence[str],
                 *, unit: str = "") -> str:
    """Horizontal stacked bars: per row, the values of `parts` side by side, with a legend."""
    left, right, row_h = 170, 90, 24
    height = max(1, len(rows)) * row_h + 50
    top = max([sum(v) for _, v in rows] + [1e-12])
    scale = (WIDTH - left - right) / top
    body = []
    for i, (label, values) in enumerate(rows):
        y = 10 + i * row_h
        body.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{esc(label, 28)}</text>')
        x = float(left)
        for j, value in enumerate(values):
            w = value * scale
            body.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
                        f'fill="{PALETTE[j % len(PALETTE)]}"><title>{esc(label)} {esc(parts[j])}: '
                        f'{esc(_fmt(value) + unit)}</title></rect>')
            x += w
        body.append(f'<text x="{x + 6:.1f}" y="{y + 15}">{esc(_fmt(sum(values)) + unit)}</text>')
    y = height - 16
    for j, part in enumerate(parts):
        x = left + j * 150
        body.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{PALETTE[j % len(PALETTE)]}"/>'
                    f'<text x="{x + 16}" y="{y}">{esc(part, 20)}</text>')
    return _frame(name, title, height, body)


def columns(name: str, title: str, bins: Sequence[tuple[float, float, int]], *, x_label: str) -> str:
    """A histogram: bins of (start, end, count) as adjoining columns."""
    left, bottom, height = 50, 40, 220
    plot_w, plot_h = WIDTH - left - 20, height - bottom - 15
    top = max([c for _, _, c in bins] + [1])
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{WIDTH - 20}" y2="{height - bottom}" stroke="#999"/>',
            f'<text x="{left - 6}" y="20" text-anchor="end">{top:,}</text>',
            f'<text x="{left + plot_w / 2:.0f}" y="{height - 5}" text-anchor="middle">{esc(x_label)}</text>']
    w = plot_w / max(len(bins), 1)
    for i, (start, end, count) in enumerate(bins):
        h = count / top * plot_h
        body.append(f'<rect x="{left + i * w:.1f}" y="{height - bottom - h:.1f}" width="{max(w - 1, 0.5):.1f}" '
                    f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{esc(_fmt(start))}–{esc(_fmt(end))}: '
                    f'{count:,}</title></rect>')
    if bins:
        body.append(f'<text x="{left}" y="{height - bottom + 15}">{esc(_fmt(bins[0][0]))}</text>'
                    f'<text x="{WIDTH - 20}" y="{height - bottom + 15}" text-anchor="end">'
                    f'{esc(_fmt(bins[-1][1]))}</text>')
    return _frame(name, title, height, body)


def line(name: str, title: str, points: Sequence[tuple[float, float]], *, x_label: str, y_label: str) -> str:
    """A line through (x, y) points, with the axes' ranges written at their ends."""
    left, bottom, height = 60, 40, 220
    plot_w, plot_h = WIDTH - left - 20, height - bottom - 15
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{WIDTH - 20}" y2="{height - bottom}" stroke="#999"/>',
            f'<line x1="{left}" y1="15" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
            f'<text x="{left + plot_w / 2:.0f}" y="{height - 5}" text-anchor="middle">{esc(x_label)}</text>',
            f'<text x="12" y="{15 + plot_h / 2:.0f}" transform="rotate(-90 12 {15 + plot_h / 2:.0f})" '
            f'text-anchor="middle">{esc(y_label)}</text>']
    if points:
        x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
        y1 = max(max(p[1] for p in points), 1e-12)
        span = (x1 - x0) or 1.0
        coords = " ".join(f"{left + (x - x0) / span * plot_w:.1f},{height - bottom - y / y1 * plot_h:.1f}"
                          for x, y in points)
        body.append(f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="2" points="{coords}"/>')
        body.append(f'<text x="{left - 6}" y="20" text-anchor="end">{esc(_fmt(y1))}</text>'
                    f'<text x="{left}" y="{height - bottom + 15}">{esc(_fmt(x0))}</text>'
                    f'<text x="{WIDTH - 20}" y="{height - bottom + 15}" text-anchor="end">{esc(_fmt(x1))}</text>')
    return _frame(name, title, height, body)


def lines(name: str, title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *,
          x_labels: Sequence[str], y_label: str, as_percent: bool = False) -> str:
    """One line per (name, points) over shared x positions 0..n-1 (named by `x_labels`), with a legend."""
    left, bottom, legend = 60, 40, 22
    height = 240 + legend
    plot_w, plot_h = WIDTH - left - 20, height - bottom - legend - 15
    base = height - bottom - legend
    top = max([y for _, pts in series for _, y in pts] + [1e-12])
    span = max(len(x_labels) - 1, 1)
    shown = (lambda v: f"{v * 100:.0f}%") if as_percent else _fmt
    body = [f'<line x1="{left}" y1="{base}" x2="{WIDTH - 20}" y2="{base}" stroke="#999"/>',
            f'<line x1="{left}" y1="15" x2="{left}" y2="{base}" stroke="#999"/>',
            f'<text x="{left - 6}" y="20" text-anchor="end">{esc(shown(top))}</text>',
            f'<text x="12" y="{15 + plot_h / 2:.0f}" transform="rotate(-90 12 {15 + plot_h / 2:.0f})" '
            f'text-anchor="middle">{esc(y_label)}</text>']
    if x_labels:
        body.append(f'<text x="{left}" y="{base + 15}">{esc(x_labels[0], 16)}</text>'
                    f'<text x="{WIDTH - 20}" y="{base + 15}" text-anchor="end">{esc(x_labels[-1], 16)}</text>')
    for k, (label, points) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        coords = [(left + x / span * plot_w, base - y / top * plot_h) for x, y in points]
        if len(coords) > 1:
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                        + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
        for (x, y), (i, v) in zip(coords, points, strict=True):
            tip = f"{label}, {x_labels[int(i)] if int(i) < len(x_labels) else i}: {shown(v)}"
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{esc(tip)}</title></circle>')
        lx = left + k * 150
        body.append(f'<rect x="{lx}" y="{height - 14}" width="12" height="12" fill="{colour}"/>'
                    f'<text x="{lx + 16}" y="{height - 4}">{esc(label, 20)}</text>')
    return _frame(name, title, height, body)
