"""A self-contained ``report.html`` for every report folder.

No network access: no external URL anywhere, the figures inline as base64 PNG, the
style and the script inline. The tables are not markup: their rows travel as JSON in a
``<script type="application/json">`` block (``<`` written as ``\\u003c``, so no string can
close it) and a small inline script renders them with ``textContent``, so an untrusted
layer or model name can never become markup. The few strings written as markup (title,
command, provenance) go through :mod:`.escape`.

The page: command and provenance at the top, the headline, overview figures, then a
per-layer table that sorts (click a header, or open the page with ``#sort=column`` or
``#sort=-column``) and filters (the search box, or ``#filter=text``); clicking a row opens
that layer's figures below it. Script errors are written into the page (``#errors``), so
a headless browser's DOM dump shows them.
"""
from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..stores import atomic
from ..escape import html_attr, html_text


@dataclass(frozen=True)
class Table:
    """A table the page renders: column names and rows of plain values (str, number or None)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    key: str | None = None  # the column whose value names a row's figures (in Page.row_figures)
    filterable: bool = False

    @classmethod
    def from_frame(cls, title: str, frame: pd.DataFrame, key: str | None = None, filterable: bool = False) -> "Table":
        rows = tuple(tuple(_plain(v) for v in row) for row in frame.itertuples(index=False))
        return cls(title, tuple(str(c) for c in frame.columns), rows, key, filterable)


@dataclass(frozen=True)
class Page:
    title: str
    command: str
    provenance: tuple[tuple[str, str], ...] = ()  # (label, value) lines under the command
    headline: str = ""
    figures: tuple[Path, ...] = ()  # overview PNGs shown above the tables
    tables: tuple[Table, ...] = ()
    row_figures: Mapping[str, Sequence[Path]] = field(default_factory=dict)  # key value -> PNGs


def _plain(v: Any):
    """A JSON-ready scalar: NaN and infinities become None (JSON has neither)."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def json_for_script(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: every ``<`` written as ``\\u003c``, so
    neither ``</script>`` (closing the element) nor ``<!--`` (changing how the parser reads it) can
    occur; JSON.parse reads the escape back as ``<``."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c")


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1250px;padding:0 1em;color:#222;background:#fff}
h1{font-size:1.5em;margin-bottom:.3em} h2{font-size:1.15em;margin-top:1.6em}
code{background:#f3f3f3;padding:.1em .3em;border-radius:3px;word-break:break-all}
.prov{font-size:.9em;color:#444;margin:.2em 0} .headline{font-weight:600;font-size:1.05em;margin:1em 0}
img{max-width:100%;height:auto;display:block;margin:.4em 0}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;width:100%}
th,td{border:1px solid #ddd;padding:.25em .45em;text-align:left;vertical-align:top}
th{background:#f0f3f7;cursor:pointer;user-select:none;position:sticky;top:0}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
tr.row{cursor:pointer} tr.row:hover{background:#fafae6} tr.row.has-figs td:first-child::before{content:"\\25B8 "}
tr.open td:first-child::before{content:"\\25BE "} tr.detail td{background:#fcfcfc}
input.filter{font-size:.95em;padding:.3em;width:22em;margin:.3em 0}
#errors{color:#b00;white-space:pre-wrap}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var errors = document.getElementById("errors");
  function report(message) { errors.hidden = false; errors.textContent += message + "\n"; }
  window.addEventListener("error", function (e) { report("Uncaught " + e.message); });
  var data = JSON.parse(document.getElementById("report-data").textContent);

  function fmt(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
    return String(Number(v.toPrecision(4)));
  }
  function blank(v) { return v === null || v === undefined || v === ""; }
  function compare(a, b, dir) {
    if (blank(a) || blank(b)) return blank(a) === blank(b) ? 0 : blank(a) ? 1 : -1;  // blanks last, either way
    if (typeof a === "number" && typeof b === "number") return dir * (a - b);
    return dir * String(a).localeCompare(String(b), undefined, {numeric: true});
  }

  function build(spec, index) {
    var section = document.createElement("section");
    section.className = "table-section";
    var h = document.createElement("h2");
    h.textContent = spec.title;
    section.appendChild(h);
    var filter = null;
    if (spec.filterable) {
      filter = document.createElement("input");
      filter.className = "filter";
      filter.type = "search";
      filter.placeholder = "filter rows (any column)";
      section.appendChild(filter);
    }
    var table = document.createElement("table");
    table.id = "table-" + index;
    var thead = table.createTHead(), hr = thead.insertRow(), tbody = table.createTBody();
    var keyCol = spec.key === null ? -1 : spec.columns.indexOf(spec.key);
    var state = {col: -1, dir: 1, rows: spec.rows.slice()};
    spec.columns.forEach(function (name, c) {
      var th = document.createElement("th");
      th.textContent = name;
      th.dataset.col = name;
      th.addEventListener("click", function () {
        state.dir = state.col === c ? -state.dir : 1;
        state.col = c;
        state.rows.sort(function (a, b) { return compare(a[c], b[c], state.dir); });
        Array.prototype.forEach.call(hr.cells, function (cell) { cell.className = ""; });
        th.className = state.dir > 0 ? "asc" : "desc";
        table.dataset.sortedBy = (state.dir > 0 ? "" : "-") + name;
        render();
      });
      hr.appendChild(th);
    });
    function render() {
      var needle = filter ? filter.value.toLowerCase() : "";
      tbody.textContent = "";
      var shown = 0;
      state.rows.forEach(function (row) {
        if (needle && !row.some(function (v) { return fmt(v).toLowerCase().indexOf(needle) >= 0; })) return;
        shown += 1;
        var tr = tbody.insertRow();
        tr.className = "row";
        row.forEach(function (v) { tr.insertCell().textContent = fmt(v); });
        var figs = keyCol >= 0 ? (data.row_figures[row[keyCol]] || []) : [];
        if (figs.length) {
          tr.className += " has-figs";
          tr.addEventListener("click", function () { toggle(tr, figs, row.length); });
        }
      });
      table.dataset.shown = String(shown);
    }
    function toggle(tr, figs, width) {
      var next = tr.nextSibling;
      if (next && next.className === "detail") { next.remove(); tr.classList.remove("open"); return; }
      var detail = document.createElement("tr");
      detail.className = "detail";
      var td = detail.insertCell();
      td.colSpan = width;
      figs.forEach(function (uri) { var img = document.createElement("img"); img.src = uri; img.alt = "figure"; td.appendChild(img); });
      tr.parentNode.insertBefore(detail, tr.nextSibling);
      tr.classList.add("open");
    }
    if (filter) filter.addEventListener("input", render);
    section.appendChild(table);
    render();
    return {section: section, table: table, filter: filter, render: render};
  }

  var holder = document.getElementById("tables");
  var built = data.tables.map(function (spec, i) { var b = build(spec, i); holder.appendChild(b.section); return b; });

  // #sort=column (or -column) and #filter=text act on the first table, as a click and typing would.
  var params = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (built.length) {
    var first = built[0];
    if (params.get("filter") && first.filter) { first.filter.value = params.get("filter"); first.render(); }
    var sort = params.get("sort");
    if (sort) {
      var name = sort.replace(/^-/, ""), th = first.table.querySelector("th[data-col='" + CSS.escape(name) + "']");
      if (!th) report("no column " + name + " to sort by");
      else { th.click(); if (sort.charAt(0) === "-") th.click(); }
    }
  }
  document.body.dataset.ready = "yes";
})();
"""


def render(page: Page) -> str:
    """The page as one HTML string (deterministic: same inputs, same bytes)."""
    data = {
        "tables": [{"title": t.title, "columns": list(t.columns), "rows": [list(r) for r in t.rows], "key": t.key,
                    "filterable": t.filterable} for t in page.tables],
        "row_figures": {str(k): [png_data_uri(p) for p in v] for k, v in sorted(page.row_figures.items()) if v},
    }
    prov = "\n".join(f'<p class="prov">{html_text(label)}: {html_text(value)}</p>' for label, value in page.provenance)
    figures = "\n".join(f'<img src="{png_data_uri(p)}" alt="{html_attr(Path(p).stem)}">' for p in page.figures)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{html_text(page.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html_text(page.title)}</h1>
<p class="prov">Generated by <code>{html_text(page.command)}</code></p>
{prov}
<p class="headline">{html_text(page.headline)}</p>
<pre id="errors" hidden></pre>
{figures}
<div id="tables"></div>
<script type="application/json" id="report-data">{json_for_script(data)}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""


def write_html(path: Path, page: Page) -> None:
    atomic.write_text(path, render(page))


# --- pages of the report kinds ------------------------------------------------------------------------


def provenance_lines(info) -> tuple[tuple[str, str], ...]:
    """Weights source, file and digest of a RunInfo-like object (model, source, weights_path, weights_sha256)."""
    lines = [("Model", str(info.model)), ("Weights", str(info.source))]
    if getattr(info, "weights_path", None):
        lines.append(("Weights file", Path(str(info.weights_path)).name))
    if getattr(info, "weights_sha256", None):
        lines.append(("sha256", str(info.weights_sha256)))
    return tuple(lines)


def figures_by_prefix(folder: Path, figures: Sequence[str], keys: Mapping[str, str]) -> dict[str, list[Path]]:
    """Per-row figures: ``keys`` maps a row key to the file-name prefix of its figures (e.g. '003_')."""
    out: dict[str, list[Path]] = {}
    for key, prefix in keys.items():
        files = [folder / f for f in figures if f.startswith(prefix)]
        if files:
            out[key] = files
    return out


def fit_page(stage: Path, info, headline: str, table: pd.DataFrame, figures: Sequence[str]) -> Page:
    """The page of a `weightdist fit` report folder: one row per layer, its plots on click."""
    from ..core.families.base import headline_families

    layers = table.drop_duplicates("layer")
    fitted = table[table["family"] != ""]
    best = fitted[fitted["is_best"].astype(bool)].set_index("layer") if "is_best" in fitted else pd.DataFrame()
    frame = pd.DataFrame({"#": layers["index"].to_numpy(), "layer": layers["layer"].to_numpy(),
                          "kind": layers["kind"].to_numpy(), "shape": layers["shape"].to_numpy(),
                          "n": layers["n"].to_numpy(), "best": layers["best"].to_numpy()})
    for fam in headline_families():
        rows = fitted[fitted["family"] == fam.name].set_index("layer")
        if fam.headline in rows:
            frame[fam.headline] = frame["layer"].map(rows[fam.headline]).to_numpy()
    if not best.empty:
        frame["KS (best)"] = frame["layer"].map(best["ks_stat"]).to_numpy()
    if "verdict" in layers:
        frame["verdict"] = layers["verdict"].to_numpy()
    plots = stage / "plots"
    keys = {str(name): f"{int(index):03d}_" for name, index in zip(layers["layer"], layers["index"])}
    return Page(
        title=f"weightdist fit: {info.model}",
        command=info.command,
        provenance=provenance_lines(info),
        headline=headline,
        figures=tuple(plots / f for f in figures if f == "overview.png"),
        tables=(Table.from_frame("Per layer (click a row for its plots)", frame, key="layer", filterable=True),),
        row_figures=figures_by_prefix(plots, [f for f in figures if f != "overview.png"], keys),
    )
