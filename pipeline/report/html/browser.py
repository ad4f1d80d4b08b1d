"""The report's label browser: filters (policy, verdict, confidence, status, text search) over the
embedded labels, and a row's text, rationale and provenance on click.

The labels travel as a JSON data block (never executed, ``<`` escaped so no text can close it); one
inline script, allowed by its hash in the page's Content-Security-Policy, builds the rows with
``textContent`` only, so no label text is ever parsed as markup. A filter can also be given in the
address (``report.html#policy=spam&verdict=1``), which is how the browser test drives it.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

__all__ = ["SCRIPT", "script_hash", "section"]


SHOWN_ROWS = 100
#: characters of a text, rationale or error the browser embeds (the page stays bounded whatever the rows hold)
FIELD_LIMIT = 2000

SCRIPT = """(function () {
  var data = JSON.parse(document.getElementById("label-data").textContent);
  // columns travel as lists, repeated values as an index into the column's own list of values
  var rows = [], names = Object.keys(data.columns), count = data.count;
  for (var n = 0; n < count; n++) {
    var r = {};
    names.forEach(function (name) {
      var c = data.columns[name];
      r[name] = Array.isArray(c) ? c[n] : c.values[c.codes[n]];
    });
    rows.push(r);
  }
  var ids = ["policy", "verdict", "confidence", "status"];
  var byId = function (id) { return document.getElementById("lb-" + id); };
  var verdictOf = function (r) {
    return r.violation === null || r.violation === undefined ? "none" : String(r.violation);
  };
  var value = { policy: function (r) { return r.policy; }, verdict: verdictOf,
    confidence: function (r) { return r.confidence || "none"; }, status: function (r) { return r.status; } };
  ids.forEach(function (id) {
    var seen = {}, select = byId(id);
    rows.forEach(function (r) { seen[value[id](r)] = true; });
    Object.keys(seen).sort().forEach(function (v) {
      var o = document.createElement("option"); o.value = v; o.textContent = v; select.appendChild(o);
    });
  });
  var hash = new URLSearchParams(location.hash.slice(1));
  ids.concat(["q"]).forEach(function (id) { if (hash.has(id)) { byId(id).value = hash.get(id); } });
  function cell(tr, text, cls) {
    var td = document.createElement("td"); td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) { td.className = cls; } tr.appendChild(td); return td;
  }
  function show(r) {
    var box = byId("detail"); box.textContent = "";
    var h = document.createElement("h4"); h.textContent = r.policy + " \u00b7 " + r.id; box.appendChild(h);
    var dl = document.createElement("dl");
    Object.keys(r).forEach(function (k) {
      if (r[k] === null || r[k] === undefined || r[k] === "") { return; }
      var dt = document.createElement("dt"); dt.textContent = k;
      var dd = document.createElement("dd"); dd.textContent = Array.isArray(r[k]) ? r[k].join(", ") : String(r[k]);
      dl.appendChild(dt); dl.appendChild(dd);
    });
    box.appendChild(dl); box.hidden = false;
  }
  function render() {
    var want = {}, q = byId("q").value.toLowerCase();
    ids.forEach(function (id) { want[id] = byId(id).value; });
    var hits = rows.filter(function (r) {
      for (var i = 0; i < ids.length; i++) {
        if (want[ids[i]] && value[ids[i]](r) !== want[ids[i]]) { return false; }
      }
      if (!q) { return true; }
      return [r.id, r.text, r.rationale, r.category, r.error].some(function (s) {
        return s && String(s).toLowerCase().indexOf(q) >= 0;
      });
    });
    var body = byId("rows"); body.textContent = "";
    hits.slice(0, data.shown).forEach(function (r) {
      var tr = document.createElement("tr"); tr.tabIndex = 0;
      var id = cell(tr, String(r.id).length > 24 ? String(r.id).slice(0, 23) + "\u2026" : r.id, "id");
      id.title = r.id;
      cell(tr, r.policy); cell(tr, verdictOf(r)); cell(tr, r.confidence); cell(tr, r.status);
      cell(tr, r.category);
      cell(tr, r.text ? String(r.text).slice(0, 160) : "", "text");
      tr.addEventListener("click", function () { show(r); });
      tr.addEventListener("keydown", function (e) { if (e.key === "Enter") { show(r); } });
      body.appendChild(tr);
    });
    var table = byId("table"); table.setAttribute("data-matching", String(hits.length));
    byId("count").textContent = hits.length.toLocaleString("en") + " of " + rows.length.toLocaleString("en")
      + " embedded labels match" + (hits.length > data.shown ? " (the first " + data.shown + " shown)" : "");
  }
  ids.concat(["q"]).forEach(function (id) {
    byId(id).addEventListener(id === "q" ? "input" : "change", render);
  });
  render();
  // the laid-out page's width, for a check that nothing overflows sideways
  document.body.setAttribute("data-page-width", String(document.documentElement.scrollWidth));
})();
"""


def script_hash() -> str:
    """The script's CSP source ('sha256-…'): the page allows this script and no other."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode() + "'"


def columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows column by column, texts cut at `FIELD_LIMIT`; a column with few distinct values as
    ``{"values": [...], "codes": [...]}`` (model, run, file and policy repeat on every row).

    >>> columns([{"p": "spam", "n": n} for n in range(4)])
    {'p': {'values': ['spam'], 'codes': [0, 0, 0, 0]}, 'n': [0, 1, 2, 3]}
    """
    found: dict[str, Any] = {}
    for name in rows[0] if rows else []:
        values = [_cut(r.get(name)) for r in rows]
        hashable = [tuple(v) if isinstance(v, list) else v for v in values]
        distinct = list(dict.fromkeys(hashable))
        if isinstance(values[0], str | None) and len(distinct) * 4 <= len(values):
            index = {v: i for i, v in enumerate(distinct)}
            found[name] = {"values": [list(v) if isinstance(v, tuple) else v for v in distinct],
                           "codes": [index[v] for v in hashable]}
        else:
            found[name] = values
    return found


def _cut(value: Any) -> Any:
    return value[: FIELD_LIMIT - 1] + "…" if isinstance(value, str) and len(value) > FIELD_LIMIT else value


def section(rows: list[dict[str, Any]], total: int) -> str:
    if not rows:
        return '<section id="browser"><h2>Label browser</h2><p class="muted">No labels.</p></section>'
    sampled = len(rows) < total
    note = (f"A uniform sample of <b>{len(rows):,}</b> of the {total:,} labels is embedded (every count elsewhere "
            "covers all of them); the shards hold the rest." if sampled else
            f"All {total:,} labels are embedded.")
    payload = orjson.dumps({"columns": columns(rows), "count": len(rows), "shown": SHOWN_ROWS},
                           default=str).decode().replace("<", "\\u003c")
    selects = "".join(f'<label>{name} <select id="lb-{name}"><option value="">all</option></select></label>'
                      for name in ("policy", "verdict", "confidence", "status"))
    return ('<section id="browser"><h2>Label browser</h2>'
            f'<p class="muted">{note} Click a row for its text, rationale and provenance.</p>'
            f'<div class="filters">{selects}<label>search <input id="lb-q" type="search" '
            'placeholder="text, rationale, id"></label></div><p id="lb-count"></p>'
            '<div class="browser"><div class="scroll"><table id="lb-table"><thead><tr><th>id</th><th>policy</th>'
            '<th>verdict</th>'
            '<th>confidence</th><th>status</th><th>category</th><th>text</th></tr></thead>'
            '<tbody id="lb-rows"></tbody></table></div><aside id="lb-detail" hidden></aside></div>'
            f'<script type="application/json" id="label-data">{payload}</script>'
            f"<script>{SCRIPT}</script></section>")

