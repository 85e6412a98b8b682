"""The report page's CSS and JavaScript (inline: the report works offline, no CDN).

The script reads the embedded JSON (``<script type="application/json" id="leaf-data">``),
filters and paginates the samples, and builds the DOM of the visible page only. Every piece of
sample text reaches the page through ``textContent`` / text nodes, never ``innerHTML``.
"""

CSS = r"""
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#f6f8fa; --pr:#c0392b; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       margin: 0; background: #fff; }
header { padding: 14px 20px; border-bottom: 1px solid var(--line); background: var(--bg); }
header h1 { font-size: 20px; margin: 0 0 4px; }
header .sub { color: var(--muted); }
main { padding: 12px 20px 40px; max-width: 1280px; margin: 0 auto; }
h2 { font-size: 16px; margin: 18px 0 8px; }
.stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; }
.stat { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; background: #fff; }
.stat b { display: block; font-size: 18px; }
.stat span { color: var(--muted); font-size: 12px; }
table.t { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
table.t caption { text-align: left; color: var(--muted); padding: 2px 0; }
table.t th, table.t td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; }
table.t th:first-child, table.t td:first-child { text-align: left; }
.figs { display: flex; flex-wrap: wrap; gap: 10px; }
.figs img { max-width: 100%; width: 100%; border: 1px solid var(--line); border-radius: 4px; }
.controls { position: sticky; top: 0; z-index: 5; background: #fff; padding: 8px 0;
            border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap; gap: 8px 14px;
            align-items: center; }
.controls label { font-size: 13px; color: var(--muted); }
.controls .ctl { white-space: nowrap; }
.controls select, .controls input { font: inherit; padding: 2px 4px; }
.controls input[type=search] { width: 220px; }
.pager { display: flex; gap: 6px; align-items: center; }
.pager button { font: inherit; padding: 2px 10px; }
.card { border: 1px solid var(--line); border-radius: 8px; margin: 12px 0; padding: 10px 14px;
        background: #fff; }
.card.target { box-shadow: 0 0 0 3px #54aeff66; }
.card h3 { font-size: 15px; margin: 0 0 6px; display: flex; flex-wrap: wrap; gap: 6px;
           align-items: center; }
.card h3 a { color: inherit; text-decoration: none; }
.badge { font-size: 11px; font-weight: 600; border-radius: 10px; padding: 1px 8px;
         border: 1px solid var(--line); background: var(--bg); color: var(--muted); }
.badge.ok { background: #dafbe1; color: #116329; border-color: #aceebb; }
.badge.bad { background: #ffebe9; color: #a40e26; border-color: #ffcecb; }
.view { margin: 8px 0 4px; }
.view .vh { font-size: 12px; color: var(--muted); margin-bottom: 2px; }
.row { display: grid; grid-template-columns: 78px 1fr; gap: 8px; margin: 2px 0;
       align-items: start; }
.row .lab { font-size: 12px; color: var(--muted); padding-top: 3px; text-align: right; }
.txt { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, SFMono-Regular,
       Menlo, Consolas, monospace; font-size: 12.5px; line-height: 1.7; border: 1px solid #eee;
       border-radius: 4px; padding: 3px 6px; max-height: 260px; overflow: auto; }
.txt .u { border-radius: 2px; }
.txt .cand { outline: 1.5px solid #2c3e50; outline-offset: -1px; }
.txt .pr { border-bottom: 2.5px solid var(--pr); }
.txt .act { background-image: repeating-linear-gradient(45deg, #c0392b33 0 4px,
            transparent 4px 8px); }
.txt .tgt { color: #8c959f; }
.cfs { margin: 6px 0 0; padding-left: 18px; font-size: 13px; }
.cfs li { margin: 2px 0; }
.cfs li.active { background: #fff8c5; }
.cfs a { cursor: pointer; }
.cfs del { color: var(--pr); }
.legend { font-size: 12px; color: var(--muted); display: flex; flex-wrap: wrap; gap: 12px;
          align-items: center; }
.sw { display: inline-block; width: 60px; height: 10px; vertical-align: middle;
      border: 1px solid var(--line); }
.empty { color: var(--muted); padding: 20px 0; }
#results .block { margin: 4px 0 14px; }
#results .verdict { font-weight: 600; margin: 4px 0; }
#results h3, #summary h3 { font-size: 14px; margin: 12px 0 2px; }
.note { color: var(--muted); font-size: 12.5px; margin: 2px 0 8px; max-width: 1100px; }
td.pos, span.pos { background: #dafbe1; color: #116329; }
td.neg, span.neg { background: #ffebe9; color: #a40e26; }
.fig { margin: 0; flex: 1 1 520px; max-width: 610px; }
.fig.wide { flex-basis: 900px; max-width: 1000px; }
.fig figcaption { font-size: 12.5px; color: var(--muted); margin: 2px 4px 6px; }
.txt .pl-m, .legend .pl-m { border-top: 3px solid #1a7f37; }
.txt .pl-d, .legend .pl-d { border-top: 2px dotted #1a7f37; }
.txt .pl-m.pl-d { border-top: 3px solid #1a7f37; }
.answers { display: grid; grid-template-columns: 78px 1fr; gap: 2px 8px; font-size: 12.5px;
           margin: 6px 0 2px; }
.answers .lab { color: var(--muted); text-align: right; }
.answers .ans { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
                white-space: pre-wrap; word-break: break-word; }
@media (max-width: 700px) {
  main { padding: 8px; }
  .row { grid-template-columns: 1fr; }
  .row .lab { text-align: left; }
}
"""

JS = r"""
(function () {
"use strict";
const D = JSON.parse(document.getElementById("leaf-data").textContent);
const S = D.samples;
const COL = { t: [230, 126, 34], s: [142, 68, 173], d: [41, 128, 185] };
// by default only the scored samples: those the detection looked at
const st = { page: 0, size: 20, level: "all", screen: "all", verify: "all",
             scored: D.summary.scored_samples ? "yes" : "all", sort: "file", q: "" };
const active = {};  // sample id -> counterfactual id highlighted
let view = [];
const byId = new Map(); S.forEach((s, i) => byId.set(s.id, i));
const cfOrigin = new Map(); S.forEach((s, i) => s.cfs.forEach(c => cfOrigin.set(c.id, i)));

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  if (attrs) for (const k in attrs) {
    if (k === "text") e.textContent = attrs[k];
    else if (k === "cls") e.className = attrs[k];
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), attrs[k]);
    else e.setAttribute(k, attrs[k]);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }
function fmt(x, d) { return x == null ? "n/a" : (typeof x === "number" ? x.toFixed(d == null ? 3 : d) : String(x)); }
function milli(x) { return x == null ? "n/a" : (x / 1000).toFixed(3); }
function pct(x) { return x == null ? "n/a" : (100 * x).toFixed(1) + "%"; }

function matches(s) {
  if (st.level !== "all" && !s.views.some(v => v.level === st.level) &&
      !s.cfs.some(c => c.level === st.level)) return false;
  if (st.scored === "yes" && !s.views.length) return false;
  if (st.scored === "no" && s.views.length) return false;
  if (st.screen === "swtr" && !(s.tc === true && s.sc === false)) return false;
  if (st.screen === "other" && (s.tc === true && s.sc === false)) return false;
  if (st.screen === "unknown" && (s.tc != null && s.sc != null)) return false;
  const cfs = st.level === "all" ? s.cfs : s.cfs.filter(c => c.level === st.level);
  if (st.verify === "verified" && !cfs.some(c => c.verified === true)) return false;
  if (st.verify === "rejected" && !cfs.some(c => c.verified === false)) return false;
  if (st.verify === "unchecked" && !cfs.some(c => c.verified == null)) return false;
  if (st.verify === "none" && cfs.length) return false;
  if (st.q) {
    const q = st.q.toLowerCase();
    if (!(s.id.toLowerCase().includes(q) || (s.ins || "").toLowerCase().includes(q) ||
          s.cfs.some(c => c.id.toLowerCase().includes(q)))) return false;
  }
  return true;
}
function applyFilters() {
  view = [];
  for (let i = 0; i < S.length; i++) if (matches(S[i])) view.push(i);
  if (st.sort === "cfs") view.sort((a, b) => S[b].cfs.length - S[a].cfs.length || a - b);
  if (st.sort === "cand") view.sort((a, b) => cand(S[b]) - cand(S[a]) || a - b);
  st.page = Math.min(st.page, Math.max(0, Math.ceil(view.length / st.size) - 1));
}
function cand(s) { let n = 0; for (const v of s.views) n += v.nc || 0; return n; }

// Split text at unit and pruned-span boundaries; colour units by their value.
function heat(text, v, key, pruned, act, planted) {
  const pl = planted || {}, mis = pl.misleading || [], dis = pl.distractor || [];
  const box = el("div", { cls: "txt" });
  const u = v ? v.u : [];
  const cuts = new Set([0, text.length]);
  for (const x of u) if (x >= 0 && x <= text.length) cuts.add(x);
  for (const p of pruned) for (const x of p) if (x >= 0 && x <= text.length) cuts.add(x);
  for (const p of act) for (const x of p) if (x >= 0 && x <= text.length) cuts.add(x);
  for (const p of mis.concat(dis)) for (const x of p) if (x >= 0 && x <= text.length) cuts.add(x);
  const pts = Array.from(cuts).sort((a, b) => a - b);
  let ui = 0;
  const vals = v ? v[key] : null, nu = u.length / 2;
  const cands = key === "d" && v && v.c ? new Set(v.c) : null;  // the rule's flags, from Python
  for (let i = 0; i + 1 < pts.length; i++) {
    const a = pts[i], b = pts[i + 1];
    while (ui < nu && u[2 * ui + 1] <= a) ui++;
    const inUnit = ui < nu && u[2 * ui] <= a && u[2 * ui + 1] >= b;
    const isPr = pruned.some(p => p[0] <= a && p[1] >= b);
    const isAct = act.some(p => p[0] <= a && p[1] >= b);
    const isMis = mis.some(p => p[0] <= a && p[1] >= b), isDis = dis.some(p => p[0] <= a && p[1] >= b);
    const piece = text.slice(a, b);
    if (!inUnit && !isPr && !isAct && !isMis && !isDis) { box.append(document.createTextNode(piece)); continue; }
    const sp = el("span", { text: piece });
    let cls = inUnit ? "u" : "";
    if (inUnit && vals && vals[ui] != null) {
      const val = vals[ui] / 1000, c = COL[key];
      const a2 = val;  // every map: light where low, strong where high
      sp.style.backgroundColor = "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + (0.85 * a2).toFixed(3) + ")";
      sp.title = "teacher " + milli(v.t[ui]) + "  student " + milli(v.s[ui]) +
                 "  diff " + milli(v.d[ui]) + "  [" + u[2 * ui] + "," + u[2 * ui + 1] + ")";
      if (cands && cands.has(ui)) cls += " cand";
    }
    if (isPr) cls += " pr";
    if (isAct) cls += " act";
    if (isMis) cls += " pl-m";
    if (isDis) cls += " pl-d";
    sp.className = cls.trim();
    box.append(sp);
  }
  return box;
}

function viewText(s, v) {
  if (v.field === "response") return s.resp || "";
  return s.ins || "";
}
function viewBlock(s, v) {
  const text = viewText(s, v);
  const limit = v.field === "response" && v.pe != null ? v.pe : text.length;
  const shown = text.slice(0, limit);
  const mine = s.cfs.filter(c => c.level === v.level && c.seg === v.seg);
  const pruned = [].concat(...mine.map(c => c.pruned));
  const a = mine.find(c => c.id === active[s.id]);
  const act = a ? a.pruned : [];
  const what = v.level === "instruction" ? "instruction" :
    "response, the part before segment " + v.seg + " (characters 0-" + limit + ")";
  const th = D.threshold;
  const rule = th.mode === "fixed" ? "tau = " + th.tau : th.mode === "per-row" ? "from leaf prune" :
    th.mode + (th.mode === "quantile" ? " q = " + th.quantile : "");
  const cutText = v.cut != null ? "candidates: difference <= " + fmt(v.cut) + " (" + rule + ")" : (v.why || "no cut-off known");
  const counts = v.nc == null ? "" : " · " + plural(v.nc, "candidate " + v.kind) + " in " + plural(v.runs, "span");
  const box = el("div", { cls: "view" },
    el("div", { cls: "vh", text: what + " · " + plural(v.d.length, v.kind) + " · " + cutText + counts }));
  const planted = v.field === "response" ? null : s.pl;
  for (const [key, lab] of [["t", "teacher"], ["s", "student"], ["d", "difference"]]) {
    const h = heat(shown, v, key, pruned, act, planted);
    if (limit < text.length && key === "d") h.append(el("span", { cls: "tgt", text: text.slice(limit) }));
    box.append(el("div", { cls: "row" }, el("div", { cls: "lab", text: lab }), h));
  }
  return box;
}
function cfItem(s, c) {
  const text = (c.level === "response" ? s.resp : s.ins) || "";
  const parts = c.pruned.map(p => el("del", { text: text.slice(p[0], p[1]) }));
  const badge = c.verified === true ? el("span", { cls: "badge ok", text: "verified" }) :
    c.verified === false ? el("span", { cls: "badge bad", text: "rejected" }) :
    el("span", { cls: "badge", text: "not checked" });
  const li = el("li", { id: "cf-" + c.id, cls: active[s.id] === c.id ? "active" : "" },
    el("a", { href: "#cf-" + encodeURIComponent(c.id), title: "highlight the pruned span(s)", text: c.id,
              onclick: ev => { ev.preventDefault(); active[s.id] = active[s.id] === c.id ? null : c.id;
                               rerenderCard(s); } }),
    " ", badge, " ", el("span", { cls: "badge", text: c.level + (c.level === "response" ? " seg " + c.seg : "") }),
    c.masking ? el("span", { cls: "badge", text: c.masking + "/" + (c.strategy || "?") }) : null,
    " removes ");
  parts.forEach((p, i) => { if (i) li.append(" + "); li.append("\u00ab", p, "\u00bb"); });
  if (!parts.length) li.append("(nothing)");
  return li;
}
function card(s) {
  const i = byId.get(s.id);
  const h = el("h3", null, el("a", { href: "#s-" + encodeURIComponent(s.id), text: s.id }));
  if (s.task) h.append(el("span", { cls: "badge", text: s.task }));
  const cut = t => t ? " (cut at max_new_tokens)" : "";
  if (s.tc != null) h.append(el("span", { cls: "badge " + (s.tc ? "ok" : "bad"), text: "teacher " + (s.tc ? "right" : "wrong") + cut(s.tt) }));
  if (s.sc != null) h.append(el("span", { cls: "badge " + (s.sc ? "ok" : "bad"), text: "student " + (s.sc ? "right" : "wrong") + cut(s.st) }));
  h.append(el("span", { cls: "badge", text: s.cfs.length + " counterfactual" + (s.cfs.length === 1 ? "" : "s") }));
  const c = el("div", { cls: "card", id: "s-" + s.id, "data-index": String(i) }, h);
  if (s.ins == null) c.append(el("div", { cls: "empty", text: "No text for this sample: pass --data (samples or screened) or a counterfactuals file with original rows." }));
  const vs = st.level === "all" ? s.views : s.views.filter(v => v.level === st.level);
  for (const v of vs) c.append(viewBlock(s, v));
  if (!vs.length && s.ins != null) {  // not scored: show the text with what was pruned
    const a = s.cfs.find(x => x.id === active[s.id]);
    for (const [lev, text] of [["instruction", s.ins], ["response", s.resp]]) {
      const mine = s.cfs.filter(x => x.level === lev);
      if (text == null || (lev === "response" && !mine.length) || (st.level !== "all" && st.level !== lev)) continue;
      const pr = [].concat(...mine.map(x => x.pruned));
      c.append(el("div", { cls: "view" }, el("div", { cls: "vh", text: lev + " (not scored)" }),
        heat(text, null, "t", pr, a && a.level === lev ? a.pruned : [], lev === "instruction" ? s.pl : null)));
    }
  }
  if (s.ta != null || s.sa != null || s.gold != null) {
    const ans = el("div", { cls: "answers" });
    const mark = (ok, t) => t ? "  \u2717 cut at max_new_tokens: graded wrong" : ok === true ? "  \u2713 right" : ok === false ? "  \u2717 wrong" : "";
    if (s.gold != null) ans.append(el("div", { cls: "lab", text: "gold answer" }), el("div", { cls: "ans", text: s.gold }));
    if (s.ta != null) ans.append(el("div", { cls: "lab", text: "teacher said" }), el("div", { cls: "ans", text: s.ta + mark(s.tc, s.tt) }));
    if (s.sa != null) ans.append(el("div", { cls: "lab", text: "student said" }), el("div", { cls: "ans", text: s.sa + mark(s.sc, s.st) }));
    c.append(ans);
  }
  const cfs = st.level === "all" ? s.cfs : s.cfs.filter(x => x.level === st.level);
  if (cfs.length) c.append(el("ul", { cls: "cfs" }, ...cfs.map(x => cfItem(s, x))));
  return c;
}
function rerenderCard(s) {
  const old = document.getElementById("s-" + s.id);
  if (old) old.replaceWith(card(s));
}

function pager() {
  const n = Math.max(1, Math.ceil(view.length / st.size));
  const box = el("div", { cls: "pager" },
    el("button", { text: "\u2039 prev", onclick: () => go(st.page - 1) }),
    el("span", { text: "page " + (st.page + 1) + " / " + n + " \u00b7 " + view.length + " of " + S.length + " samples" }),
    el("button", { text: "next \u203a", onclick: () => go(st.page + 1) }));
  if (st.page === 0) box.firstChild.disabled = true;
  if (st.page >= n - 1) box.lastChild.disabled = true;
  return box;
}
function go(p) { st.page = p; render(); window.scrollTo(0, document.getElementById("samples").offsetTop - 60); }
function render() {
  const box = document.getElementById("samples");
  box.replaceChildren();
  const top = document.getElementById("pager-top");
  top.replaceChildren(pager());
  const lo = st.page * st.size;
  const ids = view.slice(lo, lo + st.size);
  if (!ids.length) box.append(el("div", { cls: "empty", text: "No sample matches the filters." }));
  const frag = document.createDocumentFragment();
  for (const i of ids) frag.append(card(S[i]));
  box.append(frag);
  if (ids.length) box.append(pager());
}

function summary() {
  const m = D.summary, box = document.getElementById("summary");
  const stat = (v, l) => el("div", { cls: "stat" }, el("b", { text: String(v) }), el("span", { text: l }));
  const th = D.threshold;
  box.append(el("div", { cls: "stats" },
    stat(m.samples, "samples"), stat(m.scored_samples, "scored samples (shown by default)"),
    stat(m.screened ? m.student_wrong_teacher_right + " / " + m.screened : "n/a", "student wrong, teacher right / screened"),
    ...(m.screened && m.truncated ? [stat(m.truncated.teacher + " / " + m.truncated.student, "screened answers cut at max_new_tokens, teacher / student (graded wrong)")] : []),
    stat(m.counterfactuals, "counterfactuals"),
    stat(pct(m.verified_share), "of the checked counterfactuals kept (" + m.verified + " kept, " + m.rejected + " rejected, " + m.unchecked + " not checked)"),
    stat(th.mode === "fixed" ? "tau " + th.tau : th.mode === "quantile" ? "quantile " + th.quantile : th.mode, "threshold (" + th.source + ")" + (m.threshold_median != null ? ", median cut-off " + fmt(m.threshold_median) : ""))));
  const lv = Object.keys(m.levels);
  if (lv.length) {
    const t = el("table", { cls: "t" }, el("tr", null, ...["level", "scored texts", "units", "candidates among units", "counterfactuals", "verified", "rejected", "spans per sample (mean)", "max"].map(x => el("th", { text: x }))));
    for (const l of lv) { const r = m.levels[l];
      const rows = r.scored_rows + (r.rows_without_candidates ? " (" + r.rows_without_candidates + " without a known cut-off)" : "");
      t.append(el("tr", null, ...[l, rows, r.units, pct(r.candidate_share), r.counterfactuals, r.verified, r.rejected, fmt(r.spans_per_sample_mean, 2), fmt(r.spans_per_sample_max, 0)].map(x => el("td", { text: String(x) })))); }
    box.append(t);
  }
  const runAttention = D.results && D.results.blocks && D.results.blocks.some(b => b.id === "attention");
  if (D.attention && D.attention.length && !runAttention) {
    box.append(el("h3", { text: "Attention on confounder spans" }));
    for (const a of D.attention) {
      const n0 = Math.max(0, ...a.models.map(x => (x.per_layer || []).length));
      const n = n0 > 1 ? n0 : 0;  // one layer: its column is the mean
      const head = ["model", "items", "mean over layers", "uniform"]; for (let k = 0; k < n; k++) head.push("layer " + k);
      const t = el("table", { cls: "t" }, el("caption", { text: "spans: " + a.spans + " \u00b7 " + (a.data || "") }), el("tr", null, ...head.map(x => el("th", { text: x }))));
      for (const x of a.models) t.append(el("tr", null, ...[x.label, x.n_items, pct(x.mean), pct(x.uniform), ...(n ? (x.per_layer || []) : []).map(pct)].map(y => el("td", { text: String(y) }))));
      box.append(t);
    }
  }
}

function bind(id, key, num) {
  const e = document.getElementById(id);
  e.addEventListener(e.tagName === "INPUT" ? "input" : "change", () => {
    st[key] = num ? Number(e.value) : e.value; st.page = 0; applyFilters(); render(); });
}
function reveal() {
  const h = decodeURIComponent(location.hash.slice(1));
  let i = null, cf = null;
  if (h.startsWith("s-")) i = byId.get(h.slice(2));
  else if (h.startsWith("cf-")) { cf = h.slice(3); i = cfOrigin.get(cf); }
  if (i == null) return;
  if (!view.includes(i)) { for (const k of ["level", "screen", "verify", "scored", "q"]) {
      st[k] = k === "q" ? "" : "all"; const c = document.querySelector("[data-key=" + k + "]"); if (c) c.value = st[k]; }
    applyFilters(); }
  st.page = Math.floor(view.indexOf(i) / st.size);
  if (cf) active[S[i].id] = cf;
  render();
  const c = document.getElementById("s-" + S[i].id);
  if (c) { c.classList.add("target"); c.scrollIntoView(); }
}
// Filters can be preset in the URL: report.html?q=ID&level=response&screen=swtr&verify=...
const params = new URLSearchParams(location.search);
for (const k of ["level", "screen", "verify", "scored", "sort", "size", "q"]) {
  if (!params.has(k)) continue;
  st[k] = k === "size" ? (Number(params.get(k)) || 20) : params.get(k);
  const c = document.querySelector("[data-key=" + k + "]"); if (c) c.value = String(st[k]);
}
for (const k of ["level", "screen", "verify", "scored", "sort", "size", "q"]) {
  const c = document.querySelector("[data-key=" + k + "]"); if (c) c.value = String(st[k]);
}
if (params.has("cf") && cfOrigin.has(params.get("cf"))) active[S[cfOrigin.get(params.get("cf"))].id] = params.get("cf");
if (params.has("page")) st.page = Math.max(0, (Number(params.get("page")) || 1) - 1);
summary();
bind("f-level", "level"); bind("f-screen", "screen"); bind("f-verify", "verify");
bind("f-scored", "scored"); bind("f-sort", "sort"); bind("f-size", "size", true); bind("f-q", "q");
applyFilters();
render();
window.addEventListener("hashchange", reveal);
if (location.hash) reveal();
// Time from navigation start to the first page rendered, shown in the header.
const ready = Math.round(performance.now());
document.body.setAttribute("data-ready-ms", String(ready));
document.getElementById("timing").textContent = " \u00b7 first page rendered " + ready + " ms after navigation";
// Measurement mode (report.html?probe, used by scripts/screenshot_report.sh --probe): time a
// filter change and a jump to the last page, then empty the sample list so that the
// DOM dump stays small.
if (/[?&]probe\b/.test(location.search)) {
  const box = document.getElementById("samples");
  const cards = box.querySelectorAll(".card").length;
  let t = performance.now();
  st.screen = "swtr"; applyFilters(); render();
  const filterMs = performance.now() - t;
  t = performance.now();
  st.page = Math.max(0, Math.ceil(view.length / st.size) - 1); render();
  const lastMs = performance.now() - t;
  box.replaceChildren();
  document.body.setAttribute("data-probe", JSON.stringify({ samples: S.length, first_page_cards: cards,
    ready_ms: ready, filter_ms: Math.round(filterMs), last_page_ms: Math.round(lastMs),
    filtered: view.length }));
}
document.body.setAttribute("data-ready", "1");
})();
"""
