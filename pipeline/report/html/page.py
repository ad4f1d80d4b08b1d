"""The report page: one self-contained HTML document (inline CSS and SVG, one inline script allowed by its
hash for the label browser, nothing fetched).

Pure: data in, markup out. Every value from the data passes through `esc`; texts are shortened.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.report.html import browser, guards, overview, svg
from pipeline.report.html import evaluation as evaluation_section
from pipeline.report.html.svg import esc

TEXT_LIMIT = 300
RATIONALE_LIMIT = 300
ERROR_LIMIT = 200

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#1d1d1d;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin-top:20px}h4{margin:12px 0 4px}
table{border-collapse:collapse;margin:8px 0 16px;max-width:100%}
td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top;overflow-wrap:break-word}
th{background:#f4f4f4;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4d6;border:1px solid #e5c66b;padding:8px 12px}.muted{color:#666}
figure.chart{margin:12px 0;max-width:100%}figcaption{font-weight:600;margin-bottom:4px}svg{max-width:100%;height:auto}
svg text{font-size:12px;fill:#222}td.text,.text{max-width:420px;white-space:pre-wrap;word-break:break-word}
.meta{color:#555;margin:0 0 12px}.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px;
margin:12px 0}.tile{border:1px solid #ddd;border-radius:6px;padding:10px 12px;background:#fafafa}
.tile .k{color:#555;font-size:12px}.tile .v{font-size:24px;font-weight:600}.tile .s{color:#666;font-size:12px}
.tile.bad{border-color:#d9a0a0;background:#fff3f3}.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.id{font-family:ui-monospace,monospace}
.filters{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0}
.browser{display:grid;grid-template-columns:minmax(0,1fr) 360px;gap:12px;align-items:start}
.browser>.scroll{max-height:640px;overflow:auto}
#lb-table{width:100%;table-layout:fixed}#lb-table td{overflow:hidden;text-overflow:ellipsis;
white-space:nowrap}#lb-table tr{cursor:pointer}#lb-table tr:hover{background:#eef4fb}
#lb-detail{border:1px solid #ddd;padding:8px 12px;max-height:640px;overflow:auto;background:#fcfcfc}
#lb-detail dt{font-weight:600;margin-top:6px}#lb-detail dd{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
"""


def render(data: dict[str, Any]) -> str:
    cost = data["cost"]
    evaluation = data.get("eval")
    names = [p["policy"] for p in data["policies"]]
    total = sum(p["labels"] for p in data["policies"])
    sections = [
        _summary(data),
        overview.tiles(data),
        evaluation_section.section(evaluation, data.get("truth") or {}) if evaluation else "",
        guards.sections(cost),
        _labels(data),
        overview.rules(data.get("rules") or []),
        overview.co_flags(data.get("co_flags") or []),
        overview.breakdown(data.get("breakdown")),
        overview.nights(data.get("nights") or [], names),
        browser.section(data.get("browser") or [], total),
        _cost(cost),
        overview.spend(cost),
        overview.endpoints(cost),
        _latency(data, cost),
        overview.lengths(data.get("lengths") or []),
        _throughput(data),
        _statuses(data),
        _expensive(data),
        _flagged(data),
        "" if evaluation else evaluation_section.section(None, {}),
    ]
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src {browser.script_hash()}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="moderate-input-columns" content="{esc(orjson.dumps(data.get("columns")).decode())}">'
            f"<title>Moderation report: {esc(data['out'], 80)}</title><style>{_STYLE}</style></head><body>"
            + "".join(sections) + "</body></html>\n")


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _id(value: object) -> str:
    """An id shortened to fit its column, the whole value on hover."""
    return f'<span class="id" title="{esc(value)}">{esc(value, 24)}</span>'


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _ci(ci: tuple[float, float] | list[float] | None) -> str:
    return "-" if ci is None else f"{ci[0] * 100:.2f}% – {ci[1] * 100:.2f}%"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.6f}"


def _summary(data: dict[str, Any]) -> str:
    c = data["cost"]
    warn = ('<p class="warn">Built-in <b>simulator</b>: verdicts come from a keyword rule, not a model.</p>'
            if c.get("simulated") else "")
    meta = (f'<p class="meta">{esc(data["out"], 120)} · model {esc(c.get("model"))} · provider '
            f'{esc(c.get("provider"))} · {c.get("requests", 0):,} billed requests · list price '
            f'{esc(_usd(c.get("cost_usd")))} · generated {esc(c.get("generated_at"))}</p>')
    return f"<h1>Moderation report</h1>{meta}{warn}"


def _labels(data: dict[str, Any]) -> str:
    policies = data["policies"]
    chart = svg.hbars("violation-rate", "Violation rate per policy (ok labels; 95 % Wilson interval)",
                      [(p["policy"], p["rate"] or 0.0, p["ci"]) for p in policies], as_percent=True)
    rows = []
    for p in policies:
        rows.append([esc(p["policy"]), f"{p['labels']:,}", f"{p['ok']:,}", f"{p['violations']:,}",
                     _pct(p["rate"]), _ci(p["ci"])])
    cat_rows = [[esc(p["policy"]), esc(c["category"] or "(none)", 60), f"{c['count']:,}", _pct(c["rate"]), _ci(c["ci"])]
                for p in policies for c in p["categories"]]
    categories = svg.hbars("categories", "Flagged labels per policy and category",
                           [(f"{p['policy']} {c['category'] or '(none)'}", float(c["count"]), None)
                            for p in policies for c in p["categories"]])
    return ("<h2>Labels</h2>" + chart
            + _table(["policy", "labels", "ok", "violations", "rate", "95 % interval"], rows, {1, 2, 3, 4})
            + "<h3>Categories</h3>" + categories
            + _table(["policy", "category", "flagged", "share of ok labels", "95 % interval"], cat_rows, {2, 3}))


def _cost(c: dict[str, Any]) -> str:
    price = c.get("pricing") or {}
    inp, cached, out = (price.get(k, 0.0) for k in ("input_per_million", "cached_input_per_million",
                                                     "output_per_million"))
    bars, rows = [], []
    for name, p in (c.get("per_policy") or {}).items():
        parts = ((p["prompt_tokens"] - p["cached_prompt_tokens"]) * inp / 1e6,
                 p["cached_prompt_tokens"] * cached / 1e6, p["completion_tokens"] * out / 1e6)
        bars.append((name, parts))
        rows.append([esc(name), f"{p['requests']:,}", f"{p['prompt_tokens']:,}", f"{p['cached_prompt_tokens']:,}",
                     f"{p['completion_tokens']:,}", _usd(parts[0]), _usd(parts[1]), _usd(parts[2]),
                     _usd(p["cost_usd"])])
    chart = svg.stacked_bars("cost", "Cost per policy at list price (US dollars)", bars,
                             ["input", "cached input", "output"], unit=" $")
    host = c.get("server_reported_cost_usd")
    charge = (f"<p>List price: {_usd(c.get('cost_usd'))}; charge reported by the host: "
              f"{_usd(host) if host is not None else 'not reported by this host'}.</p>")
    return ("<h2>Cost</h2>" + chart + charge
            + _table(["policy", "requests", "prompt tokens", "cached", "completion tokens", "input $", "cached $",
                      "output $", "total $"], rows, {1, 2, 3, 4, 5, 6, 7, 8})
            + f'<p class="muted">Prices per 1 M tokens: input ${inp:g}, cached input ${cached:g}, '
              f"output ${out:g}.</p>")


def _latency(data: dict[str, Any], c: dict[str, Any]) -> str:
    lat = c.get("latency_ms") or {}
    chart = svg.columns("latency", "Latency of paid calls (ms, up to the 99th percentile)", data["latency"],
                        x_label="milliseconds")
    return (f"<h2>Latency</h2>{chart}<p>p50 {esc(lat.get('p50', '-'))} ms, p95 {esc(lat.get('p95', '-'))} ms.</p>")


def _throughput(data: dict[str, Any]) -> str:
    t = data["throughput"]
    chart = svg.line("throughput", "Throughput over time", t["points"], x_label="seconds since the first answer",
                     y_label="per second")
    return f"<h2>Throughput</h2>{chart}<p class=\"muted\">{esc(t['source'])}</p>"


def _statuses(data: dict[str, Any]) -> str:
    chart = svg.hbars("statuses", "Labels per status", [(s, float(n), None) for s, n in data["statuses"].items()])
    errors = [[esc(s), esc(e, ERROR_LIMIT), f"{n:,}"] for s, e, n in data["errors"]]
    return ("<h2>Statuses and errors</h2>" + chart
            + (_table(["status", "error", "labels"], errors, {2}) if errors else "<p>No errors.</p>"))


def _expensive(data: dict[str, Any]) -> str:
    rows = [[_id(r["id"]), esc(r["policy"]), f"{r['prompt_tokens'] or 0:,}", f"{r['completion_tokens'] or 0:,}",
             _usd(r["cost_usd"]), f'<span class="text">{esc(r.get("text"), TEXT_LIMIT)}</span>']
            for r in data["expensive"]]
    return ("<h2>Most expensive rows</h2>"
            + (_table(["id", "policy", "prompt tokens", "completion tokens", "cost", "text (shortened)"], rows,
                      {2, 3, 4}) if rows else "<p>No paid calls.</p>"))


def _flagged(data: dict[str, Any]) -> str:
    rows = [[_id(r["id"]), esc(r["policy"]), esc(r["category"], 40), esc(r["confidence"]),
             f'<div class="text">{esc(r.get("text"), TEXT_LIMIT)}</div>',
             f'<div class="text">{esc(r["rationale"], RATIONALE_LIMIT)}</div>'] for r in data["flagged"]]
    return ("<h2>Sample of flagged rows</h2><p class=\"muted\">Content is shown shortened and escaped; it may be "
            "offensive.</p>"
            + (_table(["id", "policy", "category", "confidence", "text", "rationale"], rows)
               if rows else "<p>No flagged rows.</p>"))
