"""The report page: one self-contained HTML document (inline CSS and SVG, no script, no link out).

Pure: data in, markup out. Every value from the data passes through `esc`; texts are shortened.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.report.html import guards, svg
from pipeline.report.html.svg import esc

TEXT_LIMIT = 300
RATIONALE_LIMIT = 300
ERROR_LIMIT = 200

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:980px;
color:#1d1d1d;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top}
th{background:#f4f4f4;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4d6;border:1px solid #e5c66b;padding:8px 12px}.muted{color:#666}
figure.chart{margin:12px 0}figcaption{font-weight:600;margin-bottom:4px}svg text{font-size:12px;fill:#222}
td.text{max-width:420px;white-space:pre-wrap;word-break:break-word}
"""


def render(data: dict[str, Any]) -> str:
    cost = data["cost"]
    sections = [
        _summary(data),
        guards.sections(cost),
        _labels(data),
        _cost(cost),
        _latency(data, cost),
        _throughput(data),
        _statuses(data),
        _expensive(data),
        _flagged(data),
        _eval(data.get("eval")),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f'<meta name="moderate-input-columns" content="{esc(orjson.dumps(data.get("columns")).decode())}">'
            f"<title>Moderation report: {esc(data['out'], 80)}</title><style>{_STYLE}</style></head><body>"
            + "".join(sections) + "</body></html>\n")


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
    rows = [["output directory", esc(data["out"])], ["model", esc(c.get("model"))],
            ["provider", esc(c.get("provider"))], ["rows", f"{c.get('rows', 0):,}"],
            ["labels (rows × policies)", f"{c.get('labels', 0):,}"], ["billed requests", f"{c.get('requests', 0):,}"],
            ["cost (list price)", esc(_usd(c.get("cost_usd")))],
            ["generated", esc(c.get("generated_at"))]]
    return f"<h1>Moderation report</h1>{warn}" + _table(["", ""], rows)


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
    rows = [[esc(r["id"], 80), esc(r["policy"]), f"{r['prompt_tokens'] or 0:,}", f"{r['completion_tokens'] or 0:,}",
             _usd(r["cost_usd"]), f'<span class="text">{esc(r.get("text"), TEXT_LIMIT)}</span>']
            for r in data["expensive"]]
    return ("<h2>Most expensive rows</h2>"
            + (_table(["id", "policy", "prompt tokens", "completion tokens", "cost", "text (shortened)"], rows,
                      {2, 3, 4}) if rows else "<p>No paid calls.</p>"))


def _flagged(data: dict[str, Any]) -> str:
    rows = [[esc(r["id"], 80), esc(r["policy"]), esc(r["category"], 40), esc(r["confidence"]),
             f'<div class="text">{esc(r.get("text"), TEXT_LIMIT)}</div>',
             f'<div class="text">{esc(r["rationale"], RATIONALE_LIMIT)}</div>'] for r in data["flagged"]]
    return ("<h2>Sample of flagged rows</h2><p class=\"muted\">Content is shown shortened and escaped; it may be "
            "offensive.</p>"
            + (_table(["id", "policy", "category", "confidence", "text", "rationale"], rows)
               if rows else "<p>No flagged rows.</p>"))


def _eval(result: dict[str, Any] | None) -> str:
    if not result:
        return "<h2>Evaluation</h2><p class=\"muted\">No evaluation yet: <code>moderate eval OUT_DIR --truth FILE " \
               "--label-column C</code> adds it here.</p>"
    bars, rows = [], []
    for name, p in result.get("policies", {}).items():
        if "tp" not in p.get("confusion", {}):  # a comparison of categories (eval --compare category)
            continue
        for metric in ("precision", "recall", "f1"):
            if p.get(metric) is not None:
                bars.append((f"{name} {metric}", p[metric], (p.get("intervals") or {}).get(metric)))
        c = p["confusion"]
        rows.append([esc(name), esc(p.get("label_column")), f"{p['scored']:,}",
                     *(_metric(p, m) for m in ("precision", "recall", "f1", "accuracy")),
                     f"{c['tp']:,} / {c['fp']:,} / {c['fn']:,} / {c['tn']:,}",
                     f"{p['excluded_no_truth']:,}", f"{p['excluded_not_ok']:,}"])
    chart = svg.hbars("eval", "Precision, recall and F1 against the truth (95 % bootstrap interval)", bars)
    return (f"<h2>Evaluation</h2><p>Truth: {esc(result.get('truth'), 200)}</p>" + chart
            + _table(["policy", "truth column", "scored", "precision", "recall", "F1", "accuracy",
                      "TP / FP / FN / TN", "no truth", "not ok"], rows, {2, 3, 4, 5, 6, 8, 9}))


def _metric(p: dict[str, Any], name: str) -> str:
    value = p.get(name)
    if value is None:
        return "-"
    ci = (p.get("intervals") or {}).get(name)
    return f"{value:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
