"""Markdown tables from ``results.json`` (printed by ``leaf demo``, written to RESULTS.md)."""

from __future__ import annotations

import math

from leaf.pipeline.config import LABELS, SPLIT_LABELS


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def format_cell(c: dict | None, sign: str = "") -> str:
    """``mean [lo, hi]`` of a results cell (the mean alone when there is no interval);
    ``sign="+"`` writes differences with their sign."""
    if not c:
        return "-"
    f = f"{sign}.3f"
    if isinstance(c.get("lo"), float) and math.isnan(c["lo"]):
        return f"{c['mean']:{f}}"
    return f"{c['mean']:{f}} [{c['lo']:{f}}, {c['hi']:{f}}]"


def _adds_rows(results: dict, key: str) -> bool:
    """True for a variant that adds counterfactual-kind rows to the originals."""
    spec = (results.get("variants") or {}).get(key) or {}
    return bool(spec.get("sets") or spec.get("extra_originals"))


def accuracy_table(results: dict, keys: list[str] | None = None) -> str:
    """Accuracy per model group and test split: mean and 95% interval. A variant none of
    whose runs had a counterfactual row to train on says so instead of printing numbers that
    only repeat KD's; one where some runs had none says how many."""
    splits = results["splits"]
    header = ["model", "lambda", "runs", *[SPLIT_LABELS.get(s, s) for s in splits]]
    rows = []
    for r in results["rows"]:
        if keys is not None and r["key"] not in keys:
            continue
        lam = r.get("hybrid_lambda")
        label, cells = r["label"], [format_cell(r["cells"].get(s)) for s in splits]
        counts = r.get("counterfactual_rows")
        if counts is not None and _adds_rows(results, r["key"]):
            empty = sum(c == 0 for c in counts)
            if empty == len(counts):
                cells = ["trained on 0 counterfactuals"] * len(splits)
            elif empty:
                label += f" ({empty} of {len(counts)} runs had 0 counterfactuals)"
        lam_cell = "uniform" if r.get("mixing") == "uniform" else "-" if lam is None else f"{lam:g}"
        rows.append([label, lam_cell, str(r["replicates"]), *cells])
    return _table(header, rows)


def differences_table(results: dict) -> str | None:
    """Each variant minus KD w/o mask, paired by seed: the run's headline."""
    diffs = results.get("differences") or []
    if not diffs:
        return None
    splits = results["splits"]
    rows = []
    for d in diffs:
        note = f"{d['pairs']}"
        if d["runs_without_counterfactuals"]:
            note += f" ({d['runs_without_counterfactuals']} left out: 0 counterfactuals)"
        cells = [format_cell(d["cells"].get(s), "+") for s in splits] if d["pairs"] else \
            ["no run had counterfactuals"] * len(splits)
        rows.append([f"{d['label']} - KD w/o mask", note, *cells])
    return _table(["difference", "paired runs", *[SPLIT_LABELS.get(s, s) for s in splits]],
                  rows)


def detection_table(results: dict) -> str:
    """Pruned spans against the planted distractors, one row per masking rule."""
    det = results.get("detection") or {}
    if not det:
        return "(no detection metrics in this run)"
    rows = [[rule, str(d["n_samples"]), format_cell(d.get("span_recall")),
             format_cell(d.get("token_precision"))] for rule, d in det.items()]
    return _table(["rule", "scored samples", "span recall", "token precision"], rows)


def _pct_cell(c: dict | None) -> str:
    """``mean [lo, hi]`` of a share, in percent."""
    if not c or c.get("mean") is None:
        return "-"
    lo, hi = c.get("lo"), c.get("hi")
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{100 * c['mean']:.1f}%"
    return f"{100 * c['mean']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def attention_table(results: dict) -> str | None:
    """Share of the response tokens' attention on the planted distractor, per student."""
    att = results.get("attention")
    if not att or not att.get("rows"):
        return None
    rows = [[r["label"], str(r["replicates"]), "/".join(str(n) for n in r["n_items"]),
             _pct_cell(r.get("share")), _pct_cell(r.get("uniform"))] for r in att["rows"]]
    return _table(["model", "runs", "samples", "attention on distractor (mean over layers)",
                   "uniform attention"], rows)


def counts_table(results: dict) -> str:
    """Per data replicate: samples screened and scored, counterfactuals made and kept per set."""
    counts = results["counts"]
    reps = list(counts)
    per = lambda f: " / ".join(str(f(counts[d])) for d in reps)  # noqa: E731
    lines = [
        f"per data replicate ({' / '.join(reps)}): training samples {per(lambda c: c['train'])}; "
        f"teacher right and student wrong {per(lambda c: c['teacher_right_student_wrong'])}; "
        f"scored by detect {per(lambda c: c['scored'])}",
        "",
    ]
    names = list(counts[reps[0]]["sets"])
    rows = [[name, per(lambda c, n=name: c["sets"][n]["samples"]),
             per(lambda c, n=name: c["sets"][n]["counterfactuals"]),
             per(lambda c, n=name: c["sets"][n]["verified"]),
             per(lambda c, n=name: c["sets"][n]["rejected"]),
             per(lambda c, n=name: c["sets"][n].get("kept_remove_planted", "-"))]
            for name in names]
    return "\n".join(lines) + "\n" + _table(
        ["counterfactual set", "samples", "counterfactuals", "verified", "rejected",
         "kept, removing the whole planted number"], rows)


def span_vs_collective_table(results: dict) -> str | None:
    """LeaF (instruction) with span pruning next to collective pruning, when both ran."""
    keys = [r["key"] for r in results["rows"]]
    if "leaf_instr" not in keys or "leaf_collective" not in keys:
        return None
    return accuracy_table(results, ["leaf_instr", "leaf_collective"])


def render(results: dict) -> str:
    """Every table of a run, with headings and the intervals explained."""
    title = f"{results['name']}{', quick' if results.get('quick') else ''}"
    parts = []
    diff = differences_table(results)
    if diff:
        parts += [f"## LeaF minus KD, paired by seed ({title})", "", diff, "",
                  "accuracy of each variant minus KD w/o mask's, run by run (the two runs of a "
                  "seed share data and originals); mean [95% Student-t interval over the "
                  "pairs]; an interval that excludes 0 is a difference the runs show. Runs "
                  "whose variant had no counterfactual to train on are left out.", ""]
    parts += [
        f"## Accuracy ({title})",
        "",
        accuracy_table(results),
        "",
        "lambda: the weight of the standard-distillation term in each variant's loss "
        "('uniform': no lambda, every target token weighs the same). "
        "mean [95% interval] over runs (one run per seed; with testbed data each seed also "
        "draws its own splits): Student-t with >= 2 runs (clipped to [0, 1]), Wilson over test "
        "samples with one.",
        "",
        "## Detection against the planted spans",
        "",
        detection_table(results),
        "",
        "## Counterfactuals",
        "",
        counts_table(results),
    ]
    att = attention_table(results)
    if att:
        a = results["attention"]
        parts += ["", "## Attention on the planted distractor", "", att, "",
                  f"share of each response token's attention (averaged over heads, response "
                  f"tokens and layers) that lands on the planted {a.get('planted_part')} "
                  f"tokens, on the {SPLIT_LABELS.get(a.get('split'), a.get('split'))} test "
                  "split; 'uniform attention' is the share a model attending uniformly over "
                  "its causal context would give. mean [95% interval]: Student-t over runs "
                  "with >= 2 runs, else over samples."]
    svc = span_vs_collective_table(results)
    if svc:
        parts += ["", "## Span vs collective pruning", "", svc]
    return "\n".join(parts) + "\n"


__all__ = ["LABELS", "accuracy_table", "differences_table", "detection_table", "counts_table", "attention_table",
           "span_vs_collective_table", "render"]
