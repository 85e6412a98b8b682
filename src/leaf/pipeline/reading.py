"""Plain-English statements read off ``results.json``: what differs, and by how much.

Every sentence is computed from the numbers, so it stays true when the numbers change. A
variant is compared with KD w/o mask through differences paired by seed (a difference is shown
when its 95% interval excludes 0); other groups are called different only when their 95%
intervals do not overlap (a conservative reading; with few seeds the intervals are wide).
"""

from __future__ import annotations

from leaf.pipeline.config import LABELS, SPLIT_LABELS


def _rows(results: dict) -> dict[str, dict]:
    return {r["key"]: r for r in results["rows"]}


def compare(a: dict, b: dict) -> str:
    """``a`` vs ``b`` (two cells): the difference and whether the intervals separate it."""
    d = a["mean"] - b["mean"]
    if any(not isinstance(c.get(k), int | float) for c in (a, b) for k in ("lo", "hi")):
        verdict = "no interval on one side: no difference shown"  # null bounds: one run
    elif a["lo"] > b["hi"]:
        verdict = "higher, intervals do not overlap"
    elif a["hi"] < b["lo"]:
        verdict = "lower, intervals do not overlap"
    else:
        verdict = "intervals overlap: no difference shown"
    return f"{d:+.3f} ({verdict})"


def paired(c: dict) -> str:
    """A paired difference: its mean and whether its 95% interval excludes 0."""
    lo, hi = c.get("lo"), c.get("hi")
    if lo is None or lo != lo:  # one pair: no interval
        return f"{c['mean']:+.3f} (one pair, no interval)"
    if lo > 0:
        verdict = "interval above 0"
    elif hi < 0:
        verdict = "interval below 0"
    else:
        verdict = "interval includes 0: no difference shown"
    return f"{c['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] ({verdict})"


def statements(results: dict) -> list[str]:
    """Bullet points: teacher and student calibration, KD vs LeaF, detection, pruning."""
    rows = _rows(results)
    splits = results["splits"]
    out: list[str] = []
    label = lambda s: SPLIT_LABELS.get(s, s)  # noqa: E731
    if "teacher" in rows:
        cells = rows["teacher"]["cells"]
        worst = min(cells.values(), key=lambda c: c["mean"]) if cells else None
        if worst is not None:
            out.append(f"Teacher: lowest split accuracy {worst['mean']:.3f} "
                       f"({'meets' if worst['mean'] >= 0.9 else 'does NOT meet'} the 0.90 bar).")
    if "student" in rows and {"test_id", "test_anti"} <= set(rows["student"]["cells"]):
        c = rows["student"]["cells"]
        out.append(f"Pre-KD student: in-distribution {c['test_id']['mean']:.3f} vs "
                   f"anti-correlated {c['test_anti']['mean']:.3f}, difference "
                   f"{compare(c['test_id'], c['test_anti'])}; a gap here is the student's "
                   "reliance on the planted confounder.")
    for d in results.get("differences") or []:
        if not d["pairs"]:
            out.append(f"{d['label']}: no run had a counterfactual to train on, so it shows "
                       "nothing about LeaF (its runs only repeat KD w/o mask).")
            continue
        parts = [f"{label(sp)} {paired(d['cells'][sp])}" for sp in splits if sp in d["cells"]]
        left = d["runs_without_counterfactuals"]
        out.append(f"{d['label']} minus KD w/o mask, paired over {d['pairs']} runs"
                   + (f" ({left} without counterfactuals left out)" if left else "") + ": "
                   + "; ".join(parts) + ".")
    if "leaf_instr" in rows and "leaf_collective" in rows:
        a, b = rows["leaf_collective"]["cells"], rows["leaf_instr"]["cells"]
        parts = [f"{label(s)} {compare(a[s], b[s])}" for s in splits if s in a and s in b]
        out.append("Collective minus span pruning (instruction level): " + "; ".join(parts) + ".")
    if "student" in rows and "kd" in rows:
        parts = [f"{label(s)} {compare(rows['kd']['cells'][s], rows['student']['cells'][s])}"
                 for s in splits if s in rows["kd"]["cells"] and s in rows["student"]["cells"]]
        out.append("KD w/o mask minus Pre-KD student: " + "; ".join(parts) + ".")
    out += attention_statements(results)
    det = results.get("detection") or {}
    parts = []
    for rule, d in det.items():
        r, p = d.get("span_recall"), d.get("token_precision")
        fmt = lambda c: "n/a" if not c else f"{c['mean']:.2f}"  # noqa: E731
        parts.append(f"{rule} span recall {fmt(r)}, token precision {fmt(p)}")
    if parts:
        n = next(iter(det.values())).get("n_samples")
        out.append(f"Detection over {n} scored training samples (all runs): "
                   + "; ".join(parts) + ".")
    if "gradient" in det:
        for other in ("random", "ppl"):
            if other not in det:
                continue
            parts = [f"{k.replace('_', ' ')} {compare(det['gradient'][k], det[other][k])}"
                     for k in ("span_recall", "token_precision")
                     if k in det["gradient"] and k in det[other]]
            if parts:
                out.append(f"Gradient minus {other} masking: " + "; ".join(parts) + ".")
    counts = results["counts"]
    train = sum(c["train"] for c in counts.values())
    for variant, spec in (results.get("variants") or {}).items():
        set_names = spec["sets"]
        if not set_names:
            continue
        extra = sum(c["sets"][n]["kept"] for c in counts.values() for n in set_names
                    if n in c["sets"])
        how = ("every target token weighs the same (uniform mixing)"
               if (rows.get(variant) or {}).get("mixing") == "uniform" else
               f"every batch holds both kinds, the counterfactual term weighing "
               f"{1 - spec['hybrid_lambda']:g} (paired mixing)")
        out.append(f"{LABELS.get(variant, variant)} trains on {train} originals plus {extra} "
                   f"counterfactual rows over all runs ({100 * extra / max(train + extra, 1):.1f}% "
                   f"of its rows); {how}.")
    kept = []
    for name in next(iter(counts.values()))["sets"]:
        made = sum(c["sets"][name]["counterfactuals"] for c in counts.values())
        ok = sum(c["sets"][name]["verified"] for c in counts.values())
        checked = sum(c["sets"][name]["verified"] + c["sets"][name]["rejected"]
                      for c in counts.values())
        if checked:
            kept.append(f"{name} {ok}/{made}")
    if kept:
        out.append("Counterfactuals kept by verification, all runs (kept/made): "
                   + ", ".join(kept) + ".")
    if len(results.get("seeds") or []) < 2:
        out.append("One run only: the intervals are Wilson intervals over test samples and say "
                   "nothing about run-to-run variation.")
    return out


def attention_statements(results: dict) -> list[str]:
    """Students' attention on the planted distractor: each distilled model vs KD w/o mask and
    Pre-KD vs KD, in percentage points, with the interval reading of :func:`compare`."""
    att = results.get("attention") or {}
    rows = {r["key"]: r for r in att.get("rows") or []}

    def ok(c: dict | None) -> bool:
        return bool(c) and all(isinstance(c.get(k), int | float) and c[k] == c[k]
                               for k in ("mean", "lo", "hi"))

    def pp(a: dict, b: dict) -> str:
        scaled = lambda c: {k: 100 * c[k] for k in ("mean", "lo", "hi")}  # noqa: E731
        return compare(scaled(a), scaled(b)).replace(" (", " percentage points (", 1)

    out = []
    split = SPLIT_LABELS.get(att.get("split"), att.get("split"))
    if "kd" in rows and ok(rows["kd"].get("share")):
        kd = rows["kd"]["share"]
        for key, r in rows.items():
            if key != "kd" and ok(r.get("share")):
                out.append(f"Attention on the distractor ({split} split), {r['label']} minus "
                           "KD w/o mask: "
                           f"{pp(r['share'], kd)}.")
        u = rows["kd"].get("uniform")
        if ok(u):
            out.append(f"KD w/o mask puts {100 * kd['mean']:.1f}% of its attention on the "
                       f"distractor, against {100 * u['mean']:.1f}% for uniform attention.")
    return out
