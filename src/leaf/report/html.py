"""A single self-contained HTML report: heatmaps, pruned spans, filters, summary, figures.

Everything is inline (CSS, JavaScript, the data as JSON, figures as PNG data URIs), so the file
works offline and can be mailed around. The data sits in
``<script type="application/json" id="leaf-data">`` with ``<``, ``>``, ``&`` and the JavaScript
line separators escaped as ``\\uXXXX``: sample text such as ``</script>`` cannot end the block,
and JSON.parse gives the original string back. The page renders only the visible page of
samples (20 by default), so 10,000 samples stay responsive.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leaf.report import plots
from leaf.report.page import CSS, JS

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                 "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(obj: Any) -> str:
    """JSON text safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "".join(_JSON_ESCAPES.get(ch, ch) for ch in text)


def _select(ident: str, key: str, label: str, options: list[tuple[str, str]]) -> str:
    opts = "".join(f'<option value="{html.escape(v)}">{html.escape(t)}</option>'
                   for v, t in options)
    return (f'<span class="ctl"><label for="{ident}">{html.escape(label)}</label> '
            f'<select id="{ident}" data-key="{key}">{opts}</select></span>')


def results_html(results: Mapping[str, Any] | None) -> str:
    """The run's tables (:func:`leaf.report.collect.results_section`) as static HTML; a line
    saying where they would come from when the directory has none."""
    if not results or not results.get("blocks"):
        return ('<section id="results"><h2>Results</h2><p class="note">No results.json here '
                '(not a <code>leaf run</code> directory, or the run has not finished): the '
                'page shows detection and pruning only.</p></section>')
    parts = [f'<section id="results"><h2>Results of the run: '
             f'{html.escape(str(results.get("name", "")))}</h2>']
    for block in results["blocks"]:
        signs = block.get("signs") or []
        first = int(block.get("first_value_column", 0))
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block["header"])
        body = []
        for r, row in enumerate(block["rows"]):
            cells = []
            for c, cell in enumerate(row):
                sign = signs[r][c - first] if r < len(signs) and 0 <= c - first < len(
                    signs[r]) else 0
                cls = ' class="pos"' if sign > 0 else ' class="neg"' if sign < 0 else ""
                cells.append(f"<td{cls}>{html.escape(str(cell))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        legend = ""
        if signs:
            legend = (' <span class="pos">green</span>: the interval lies above 0; '
                      '<span class="neg">red</span>: below 0.')
        lines = "".join(f'<p class="verdict">{html.escape(str(x))}</p>'
                        for x in block.get("lines") or [])
        parts.append(
            f'<div class="block" id="r-{html.escape(block["id"])}"><h3>'
            f'{html.escape(block["heading"])}</h3><table class="t"><tr>{head}</tr>'
            f'{"".join(body)}</table><p class="note">{html.escape(block["note"])}{legend}'
            f"</p>{lines}</div>")
    parts.append("</section>")
    return "".join(parts)


FIGURE_CAPTIONS = {
    "diff": "Normalised teacher-student saliency difference of every scored unit (density per "
            "level). Units at or left of the cut-off are confounder candidates.",
    "spans": "How many confounder spans each scored sample got, per level.",
    "attention": "Share of the response tokens' attention that lands on the confounder spans, "
                 "per model (mean over its runs, 95% interval as error bars).",
}


def render_html(data: Mapping[str, Any], figures: Mapping[str, bytes] | None = None) -> str:
    """The report page for ``data`` (from :func:`leaf.report.collect.build_report_data`).

    ``figures`` maps a name (``report_diff``...) to PNG bytes; they are embedded as data URIs,
    with a caption when the name ends in a known figure (``diff``, ``spans``, ``attention``).
    """
    payload = {k: v for k, v in data.items() if not k.startswith("_")}
    title = html.escape(str(data.get("title", "LeaF report")))

    def caption(name: str) -> str:
        kind = next((k for k in FIGURE_CAPTIONS if name.rstrip("_0123456789").endswith(k)), None)
        return html.escape(FIGURE_CAPTIONS[kind]) if kind else html.escape(name)

    figs = "".join(
        f'<figure class="fig{" wide" if "attention" in cap else ""}"><img alt="{html.escape(cap)}"'
        f' src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption>{caption(cap)}</figcaption></figure>"
        for cap, png in (figures or {}).items()
    )
    controls = " ".join([
        _select("f-level", "level", "Level", [("all", "all"), ("instruction", "instruction"),
                                               ("response", "response")]),
        _select("f-screen", "screen", "Screening",
                [("all", "all"), ("swtr", "student wrong, teacher right"),
                 ("other", "other outcomes"), ("unknown", "not screened")]),
        _select("f-verify", "verify", "Counterfactuals",
                [("all", "all"), ("verified", "has verified"), ("rejected", "has rejected"),
                 ("unchecked", "has unchecked"), ("none", "none")]),
        _select("f-scored", "scored", "Scored", [("yes", "yes"), ("all", "all"), ("no", "no")]),
        _select("f-sort", "sort", "Sort", [("file", "file order"), ("cfs", "most counterfactuals"),
                                           ("cand", "most candidate units")]),
        _select("f-size", "size", "Per page", [("20", "20"), ("50", "50"), ("100", "100"),
                                               ("10", "10")]),
        '<span class="ctl"><label for="f-q">Search</label> <input id="f-q" data-key="q" '
        'type="search" placeholder="id, counterfactual id or text"></span>',
    ])
    legend = (
        '<div class="legend"><span><span class="sw" style="background:linear-gradient(90deg,'
        '#fff,rgba(230,126,34,.85))"></span> teacher saliency</span>'
        '<span><span class="sw" style="background:linear-gradient(90deg,#fff,'
        'rgba(142,68,173,.85))"></span> student saliency</span>'
        '<span><span class="sw" style="background:linear-gradient(90deg,#fff,'
        'rgba(41,128,185,.85))"></span> normalised difference (light = low: the student leans '
        'on the unit, the teacher does not)</span>'
        '<span><span style="outline:1.5px solid #2c3e50;padding:0 4px">unit</span> at or below'
        ' the cut-off: a confounder candidate</span><span><span style="border-bottom:2.5px '
        'solid #c0392b">pruned</span> span of a counterfactual (click a counterfactual to '
        'hatch its spans)</span><span><span class="pl-m">planted</span> misleading number, '
        '<span class="pl-d">planted</span> distractor sentence (testbed)</span></div>'
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{title}</h1><div class="sub">LeaF: the run's results, then confounding-token
detection and pruning sample by sample · generated {generated} · hover a token for its
values<span id="timing"></span></div>
</header>
<main>
{results_html(data.get("results"))}
<section id="figures"><h2>Figures</h2><div class="figs">{figs or '<p class="note">none '
'(--no-figures)</p>'}</div></section>
<section id="summary"><h2>Detection and pruning in the samples below</h2></section>
<h2>Samples</h2>
{legend}
<div class="controls">{controls}<span id="pager-top"></span></div>
<section id="samples"><noscript>This report needs JavaScript to show the samples.</noscript>
</section>
</main>
<script type="application/json" id="leaf-data">{embed_json(payload)}</script>
<script>{JS}</script>
</body>
</html>
"""


def write_report(data: Mapping[str, Any], out: str | Path, *, figures: bool = True) -> list[Path]:
    """Write the HTML (atomically) and, with ``figures``, PNGs next to it; return the paths."""
    from leaf.report.collect import spans_per_sample  # heavy: numpy

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pngs: dict[str, bytes] = {}
    if figures:
        stem = out.with_suffix("")
        diffs = {k: v for k, v in data.get("_diffs", {}).items() if v}
        th = data["threshold"]
        if diffs:
            line = th["tau"] if th["mode"] == "fixed" else data["summary"]["threshold_median"]
            label = "tau" if th["mode"] == "fixed" else f"median {th['mode']} cut-off"
            written.append(plots.plot_diff_distribution(diffs, f"{stem}_diff.png", line, label))
        spans = spans_per_sample(data["samples"])
        if spans:
            written.append(plots.plot_spans_per_sample(spans, f"{stem}_spans.png"))
        for i, att in enumerate(data.get("attention") or []):
            suffix = "" if i == 0 else f"_{i}"
            written.append(plots.plot_attention(att["models"], f"{stem}_attention{suffix}.png"))
        pngs = {p.stem: p.read_bytes() for p in written}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(data, pngs), encoding="utf-8")
    tmp.replace(out)
    return [out, *written]
