"""The report's sections for nightly runs: sample scaling, canaries, drift, self-hosted cost.

Pure: the cost report's ``sample``, ``canaries``, ``drift`` and ``self_hosted`` sections in,
markup out; a section the run did not use says how to turn it on, in one muted line.
"""

from __future__ import annotations

from typing import Any

from pipeline.report.html.svg import esc

TEXT_LIMIT = 200


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _muted(text: str) -> str:
    return f'<p class="muted">{esc(text)}</p>'


def sections(cost: dict[str, Any]) -> str:
    return _sample(cost.get("sample")) + _canaries(cost.get("canaries")) + _drift(cost.get("drift")) + \
        _self_hosted(cost)


def _sample(sample: dict[str, Any] | None) -> str:
    if not sample:
        return ""
    c = sample.get("cost_usd_in_input")
    rows = []
    for name, p in sample["per_policy"].items():
        v = p.get("violations_in_input")
        rows.append([esc(name), f"{p['violations']:,} of {p['labelled_ok']:,}",
                     "-" if v is None else f"{v['estimate']:,.0f}",
                     "-" if v is None else f"{v['low']:,} – {v['high']:,}"])
    whole = "" if c is None else (f"<p>Labelling the whole input would cost about <b>${c['estimate']:,.4f}</b> "
                                  f"(95 % interval ${c['low']:,.4f} – ${c['high']:,.4f}).</p>")
    return ("<h2>Sample</h2>"
            f"<p>A uniform random sample (seed {esc(sample['seed'])}) of <b>{sample['sampled_rows']:,}</b> of "
            f"{sample['input_rows']:,} input rows was labelled; counts below are scaled to every row.</p>" + whole
            + _table(["policy", "violations in the sample", "in the whole input (estimate)", "95 % interval"], rows))


def _canaries(canaries: dict[str, Any] | None) -> str:
    if not canaries:
        return "<h2>Canaries</h2>" + _muted("No canaries: --canaries FILE sends texts of known verdict with each run.")
    verdict = (f'<p class="warn"><b>{canaries["wrong"]} of {canaries["total"]} canaries got the wrong verdict</b>: '
               "the model, the host or a policy changed.</p>" if canaries["wrong"] else
               f"<p>{canaries['passed']} of {canaries['total']} canaries passed"
               + (f", {canaries['unanswered']} unanswered" if canaries["unanswered"] else "") + ".</p>")
    rows = [[esc(name), f"{p['total']:,}", f"{p['passed']:,}", f"{p['wrong']:,}", f"{p['unanswered']:,}"]
            for name, p in canaries["per_policy"].items()]
    wrong = [[esc(f["policy"]), esc(f["text"], TEXT_LIMIT), esc(f["expected"]), esc(f["got"])]
             for f in canaries["failures"]]
    return ("<h2>Canaries</h2>" + verdict + _table(["policy", "canaries", "passed", "wrong", "unanswered"], rows)
            + (_table(["policy", "text (shortened)", "expected", "got"], wrong) if wrong else "")
            + _muted(f"Run {canaries.get('run_id')}; canaries cost ${canaries.get('cost_usd', 0):,.6f}."))


def _drift(drift: dict[str, Any] | None) -> str:
    if not drift or not drift.get("policies"):
        return "<h2>Drift</h2>" + _muted("No earlier run in this store to compare violation rates with.")
    flagged = (f'<p class="warn"><b>{esc(drift["flagged"])}</b></p>' if drift.get("flagged") else
               "<p>No violation rate moved beyond the threshold.</p>")
    rows = [[esc(d["policy"]), f"{d['baseline'] * 100:.2f}% ({d['baseline_labels']:,} labels, {d['runs']} runs)",
             f"{d['rate'] * 100:.2f}% ({d['labels']:,} labels)", f"{d['shift'] * 100:+.2f} pts",
             "<b>flagged</b>" if d["flagged"] else "-"] for d in drift["policies"]]
    return ("<h2>Drift</h2>" + flagged
            + _table(["policy", "earlier runs", "last run", "shift", ""], rows)
            + _muted(f"Flagged when the shift is at least {drift['threshold'] * 100:g} points and beyond chance "
                     "(two-proportion test, 95 %)."))


def _self_hosted(cost: dict[str, Any]) -> str:
    hosted = cost.get("self_hosted")
    per_token = cost.get("cost_per_1000_labels")
    if not hosted:
        return ""
    per_gpu = hosted["per_1000_labels"]
    return ("<h2>Self-hosted cost</h2>"
            + _table(["", "per 1,000 labels"], [
                [f"GPU time: ${hosted['gpu_hour_usd']:g}/h × {hosted['wall_seconds']:,.1f} s wall time",
                 "-" if per_gpu is None else f"${per_gpu:,.6f}"],
                ["per-token list price", "-" if per_token is None else f"${per_token:,.6f}"]]))
