"""The report's first screen and the sections a trust-and-safety lead reads next: headline tiles, rule
ids, policies flagging the same text, a kept column's breakdown, the rate per night, answer lengths,
spend against the cap and the cost per endpoint.

Pure: collected data in, markup out; every value passes through `esc`.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.report.html import svg
from pipeline.report.html.svg import esc

#: statuses that are not a verdict nor a row handled without a call
_HANDLED = {"ok", "skipped_empty", "too_long"}


def tiles(data: dict[str, Any]) -> str:
    c = data["cost"]
    failures = sum(n for s, n in data["statuses"].items() if s not in _HANDLED)
    cards = [("rows", f"{c.get('rows', 0):,}", ""), ("labels", f"{c.get('labels', 0):,}",
                                                     f"{len(data['policies'])} × rows")]
    for p in data["policies"]:
        rate = "-" if p["rate"] is None else f"{p['rate'] * 100:.1f}%"
        cards.append((f"{p['policy']} violations", rate, f"{p['violations']:,} of {p['ok']:,} ok"))
    cap = c.get("max_cost_usd")
    spent = c.get("cost_usd") or 0.0
    cards.append(("spend", f"${spent:,.4f}", f"of a ${cap:,.2f} cap ({spent / cap:.0%})" if cap else "no cap"))
    cards.append(("not labelled", f"{failures:,}", "failed, unsent or unusable" if failures else "every row handled"))
    flags = _alarms(c)
    body = "".join(f'<div class="tile{" bad" if label == "not labelled" and failures else ""}"><div class="k">'
                   f'{esc(label, 40)}</div><div class="v">{esc(value)}</div><div class="s">{esc(sub, 60)}</div></div>'
                   for label, value, sub in cards)
    return f'<section id="headline"><div class="tiles">{body}</div>{flags}</section>'


def _alarms(c: dict[str, Any]) -> str:
    notes = []
    canaries = c.get("canaries") or {}
    if canaries.get("wrong"):
        notes.append(f"{canaries['wrong']} of {canaries['total']} canaries got the wrong verdict")
    drift = c.get("drift") or {}
    if drift.get("flagged"):
        notes.append(drift["flagged"])
    return "".join(f'<p class="warn"><b>{esc(n, 400)}</b></p>' for n in notes)


def rules(rows: list[tuple[str, str, int]]) -> str:
    if not rows:
        return "<h3>Rule ids</h3><p class=\"muted\">No flagged label cited a rule id (the rationale format " \
               "asks for them).</p>"
    chart = svg.hbars("rule-ids", "Flagged labels citing each rule id", [(f"{p} {r}", float(n), None)
                                                                          for p, r, n in rows])
    return "<h3>Rule ids</h3>" + chart


def co_flags(pairs: list[dict[str, Any]]) -> str:
    if not pairs:
        return ""
    rows = [[esc(p["a"]), esc(p["b"]), f"{p['both']:,}", _share(p["both"], p["a_flagged"]),
             _share(p["both"], p["b_flagged"])] for p in pairs]
    return ("<h3>Policies flagging the same text</h3>"
            + _table(["policy A", "policy B", "rows both flagged", "share of A's flags", "share of B's flags"], rows))


def breakdown(found: dict[str, Any] | None) -> str:
    if not found:
        return ""
    column = found["column"]
    policies = sorted({r["policy"] for r in found["rows"]})
    values = sorted({r["value"] for r in found["rows"]}, key=lambda v: (v is None, v or ""))
    cells = {(r["value"], r["policy"]): r for r in found["rows"]}
    rows = []
    for v in values:
        line = [esc(v if v is not None else "(empty)", 40)]
        for p in policies:
            r = cells.get((v, p))
            line.append("-" if not r or not r["ok"] else f"{r['violations'] / r['ok'] * 100:.1f}% of {r['ok']:,}")
        rows.append(line)
    return (f"<h3>By {esc(column)}</h3><p class=\"muted\">Violation rate of ok labels by the kept column "
            f"<code>{esc(column)}</code>.</p>" + _table([column, *policies], rows))


def nights(rows: list[dict[str, Any]], policies: list[str]) -> str:
    if len(rows) < 2:
        return ("<h3>Violation rate per night</h3><p class=\"muted\">One night so far: nights that share a store "
                "(<code>--store</code>) draw a trend here.</p>")
    names = [time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["ended_at"])) for r in rows]
    series = [(p, [(i, r["rates"][p]) for i, r in enumerate(rows) if p in r["rates"]]) for p in policies]
    return "<h3>Violation rate per night</h3>" + svg.lines(
        "nights", f"Violation rate per night (last {len(rows)} in the store)", series, x_labels=names,
        y_label="violation rate", as_percent=True)


def lengths(bins: list[tuple[float, float, int]]) -> str:
    if not bins:
        return ""
    return svg.columns("answer-length", "Answer length of paid calls (completion tokens, reasoning included)",
                       bins, x_label="completion tokens")


def spend(c: dict[str, Any]) -> str:
    total, cap = 0.0, c.get("max_cost_usd")
    rows = []
    for i, run in enumerate(c.get("runs") or [], 1):
        total += run.get("cost_usd") or 0.0
        rows.append((f"after run {i}", total, None))
    if cap:
        rows.append(("cap (--max-cost)", float(cap), None))
    if not rows:
        return ""
    return svg.hbars("spend", "Spend of the directory, run by run" + (" against its cap" if cap else ""), rows,
                     unit=" $")


def endpoints(c: dict[str, Any]) -> str:
    per = c.get("per_endpoint")
    if isinstance(per, list):
        per = {str(e.get("endpoint")): e for e in per if isinstance(e, dict)}
    per = {k: v for k, v in (per or {}).items() if isinstance(v, dict)}
    if not per:
        return ""
    rows = [[f'<span class="id" title="{esc(name)}">{esc(name, 48)}</span>', f"{v.get('requests', 0):,}",
             f"{v.get('prompt_tokens', 0):,}", f"{v.get('completion_tokens', 0):,}",
             "-" if v.get("cost_usd") is None else f"${v['cost_usd']:,.6f}"] for name, v in per.items()]
    return "<h3>Per endpoint</h3>" + _table(["endpoint", "requests", "prompt tokens", "completion tokens", "cost"],
                                            rows)


def _share(part: int, whole: int) -> str:
    return "-" if not whole else f"{part / whole:.1%}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
