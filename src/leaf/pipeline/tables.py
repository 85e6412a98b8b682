"""Markdown tables from ``results.json`` (printed by ``leaf demo``, written to RESULTS.md)."""

from __future__ import annotations

import math

from leaf.distill.signal import LOW_RATIO, LOW_SIGNAL_LINE
from leaf.evaluate.truncation import WARN_SHARE, too_many_cut
from leaf.pipeline.config import LABELS, SPLIT_LABELS
from leaf.pipeline.pair_check import lowered_splits, pair_warning


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def format_cell(c: dict | None, sign: str = "") -> str:
    """``mean [lo, hi]`` of a results cell (the mean alone when there is no interval);
    ``sign="+"`` writes differences with their sign."""
    return _cell(c, f"{sign}.3f")


def _cell(c: dict | None, spec: str, scale: float = 1.0, unit: str = "") -> str:
    """A cell's ``mean [lo, hi]`` in format ``spec`` (times ``scale``, ``unit`` after the mean);
    the mean alone without finite bounds, ``-`` without a mean."""
    if not c or c.get("mean") is None:
        return "-"
    mean = f"{scale * c['mean']:{spec}}{unit}"
    if not _has_interval(c):
        return mean
    return f"{mean} [{scale * c['lo']:{spec}}, {scale * c['hi']:{spec}}]"


def _has_interval(c: dict) -> bool:
    """Whether a cell has finite bounds (results.json writes null where there are none)."""
    lo, hi = c.get("lo"), c.get("hi")
    return (isinstance(lo, int | float) and isinstance(hi, int | float)
            and math.isfinite(lo) and math.isfinite(hi))


def _adds_rows(results: dict, key: str) -> bool:
    """True for a variant that adds counterfactual-kind rows to the originals."""
    spec = (results.get("variants") or {}).get(key) or {}
    return bool(spec.get("sets") or spec.get("extra_originals"))


def accuracy_table(results: dict, keys: list[str] | None = None) -> str:
    """Accuracy per model group and test split: mean and 95% interval. A variant none of
    whose runs had a counterfactual row to train on says so instead of printing numbers that
    only repeat KD's; one where some runs had none says how many."""
    return _table(*accuracy_rows(results, keys))


def accuracy_rows(results: dict, keys: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """The header and rows of :func:`accuracy_table` (also shown by ``leaf report``)."""
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
    return header, rows


def differences_table(results: dict) -> str | None:
    """Each variant minus KD w/o mask, paired by seed: the run's headline."""
    got = difference_rows(results)
    return _table(*got) if got else None


def difference_rows(results: dict) -> tuple[list[str], list[list[str]]] | None:
    """The header and rows of :func:`differences_table`; None when nothing is paired."""
    diffs = results.get("differences") or []
    if not diffs:
        return None
    splits = results["splits"]
    small = few_runs(results)
    rows = []
    for d in diffs:
        note = f"{d['pairs']}"
        if d["runs_without_counterfactuals"]:
            note += f" ({d['runs_without_counterfactuals']} left out: 0 counterfactuals)"
        cells = [format_cell(d["cells"].get(s), "+") for s in splits] if d["pairs"] else \
            ["no run had counterfactuals"] * len(splits)
        if small:
            found = [d["cells"][s]["detectable"] for s in splits
                     if (d["cells"].get(s) or {}).get("detectable") is not None]
            cells.append(f"{max(found):.3f}" if found else "-")
        rows.append([f"{d['label']} - KD w/o mask", note, *cells])
    header = ["difference", "paired runs", *[SPLIT_LABELS.get(s, s) for s in splits]]
    if small:
        header.append("smallest detectable")
    return header, rows


#: Fewer test items per run than this, or one seed, and the headline shows the smallest
#: detectable difference.
FEW_ITEMS = 100


def few_runs(results: dict) -> bool:
    """One seed, or fewer than :data:`FEW_ITEMS` test items per run on some split."""
    cells = [c for d in results.get("differences") or [] for c in d["cells"].values()]
    if not cells:
        return False
    return (len(results.get("seeds") or []) < 2
            or any(min(c.get("items") or [FEW_ITEMS]) < FEW_ITEMS for c in cells))


def verdict(results: dict) -> str | None:
    """The one line that ends the headline: the differences the runs show (interval excluding
    0: split and direction), or that they show none and what would be needed to see one."""
    diffs = [d for d in results.get("differences") or [] if d["pairs"]]
    if not diffs:
        return None
    shown, unseen = [], []
    for d in diffs:
        for split in results["splits"]:
            c = d["cells"].get(split)
            if not c or not _has_interval(c):
                continue
            name = SPLIT_LABELS.get(split, split)
            if c["lo"] > 0 or c["hi"] < 0:
                shown.append(f"{d['label']} {'above' if c['lo'] > 0 else 'below'} KD w/o mask "
                             f"on {name} ({c['mean']:+.3f})")
            else:
                unseen.append(c)
    seeds = len(results.get("seeds") or [])
    cells = [d["cells"][s] for d in diffs for s in results["splits"] if d["cells"].get(s)]
    if not any(_has_interval(c) for c in cells):
        return ("Verdict: nothing can be concluded: one pair of runs gives no interval; more "
                "seeds, or per-item scores (metrics.samples.jsonl), are needed.")
    caveat = ("; one seed: the seed-to-seed spread is not measured, so a difference shown "
              "may be that seed's, and more seeds would be needed to confirm it"
              if seeds < 2 and shown else "")
    if not unseen:
        return "Verdict: the runs show " + "; ".join(shown) + caveat + "."
    detectable = [c["detectable"] for c in unseen if c.get("detectable") is not None]
    items = sorted({n for c in unseen for n in (c.get("items") or [])})
    size = (f"{seeds} seed{'s' if seeds != 1 else ''}"
            + (f" x {items[0]}" if len(items) == 1 else f" x {items[0]}-{items[-1]}"
               if items else "") + (" test items" if items else ""))
    need = _what_is_needed(unseen, seeds)
    smallest = (f"; with {size} a difference smaller than about {max(detectable):.3f} "
                "cannot be told from 0" if detectable else "")
    if not shown:
        return (f"Verdict: nothing can be concluded: no difference is told from 0{smallest}; "
                f"{need} would be needed to show one.")
    return (f"Verdict: the runs show {'; '.join(shown)}; no other difference is told from "
            f"0{smallest}{caveat}.")


def _what_is_needed(cells: list[dict], seeds: int) -> str:
    """More seeds or more test items: whichever source dominates the spread."""
    if seeds < 2:
        return "more seeds (one seed leaves the seed-to-seed spread unmeasured) and items"
    dominant = [c.get("dominant") for c in cells if c.get("dominant")]
    if not dominant:
        return "more seeds"
    if dominant.count("items") >= dominant.count("seeds"):
        return "more test items (they dominate the spread)"
    return "more seeds (they dominate the spread)"


def lowered_line(results: dict) -> str | None:
    """Where distillation left the student below its starting point, as information."""
    low = lowered_splits(results)
    if not low:
        return None
    parts = [f"{SPLIT_LABELS.get(s, s)} ({', '.join(labels)})" for s, labels in low.items()]
    testbed = bool((results.get("data") or {}).get("testbed"))
    return ("Below the starting point (information, not a warning): distillation left the "
            "student under the Pre-KD student's mean accuracy on " + "; ".join(parts)
            + ". A split unlike the training data can drop this way"
            + ("; the testbed's clean split does by design." if testbed else "."))


def pair_check_rows(results: dict) -> tuple[list[str], list[list[str]]] | None:
    """Teacher and student side by side per data replicate, before distillation."""
    checks = results.get("pair_check") or {}
    if not checks:
        return None
    splits = results["splits"]

    def both(c: dict | None) -> str:
        if not c or c.get("teacher") is None:
            return "-"
        return f"{c['teacher']:.3f} / {c['student']:.3f}"

    rows = [[dkey, both(c["screened"]), *[both(c["tests"].get(s)) for s in splits],
             ", ".join(SPLIT_LABELS.get(w, w) for w in c["teacher_not_better"]) or "-"]
            for dkey, c in checks.items()]
    return (["data", "screened training data", *[SPLIT_LABELS.get(s, s) for s in splits],
             "teacher not better on"], rows)


def pair_check_table(results: dict) -> str | None:
    """:func:`pair_check_rows` as a table, with the warning line when the teacher is not
    better somewhere."""
    got = pair_check_rows(results)
    if not got:
        return None
    text = _table(*got) + "\n\nteacher / student accuracy, before distillation."
    warnings = [pair_warning(c, SPLIT_LABELS) for c in results["pair_check"].values()]
    return text + "".join(f"\nWarning: {w}" for w in warnings if w)


def detection_table(results: dict) -> str:
    """Pruned spans against the planted distractors, one row per masking rule."""
    got = detection_rows(results)
    return _table(*got) if got else "(no detection metrics in this run)"


def detection_rows(results: dict) -> tuple[list[str], list[list[str]]] | None:
    """The header and rows of :func:`detection_table`; None without planted spans."""
    det = results.get("detection") or {}
    if not det:
        return None
    rows = [[rule, str(d["n_samples"]), format_cell(d.get("span_recall")),
             format_cell(d.get("token_precision"))] for rule, d in det.items()]
    return ["rule", "scored samples", "span recall", "token precision"], rows


def _pct_cell(c: dict | None) -> str:
    """``mean [lo, hi]`` of a share, in percent."""
    return _cell(c, ".1f", 100, "%")


def attention_table(results: dict) -> str | None:
    """Share of the response tokens' attention on the planted distractor, per student."""
    got = attention_rows(results)
    return _table(*got) if got else None


def attention_rows(results: dict) -> tuple[list[str], list[list[str]]] | None:
    """The header and rows of :func:`attention_table`; None when attention was not measured."""
    att = results.get("attention")
    if not att or not att.get("rows"):
        return None
    rows = [[r["label"], str(r["replicates"]), "/".join(str(n) for n in r["n_items"]),
             _pct_cell(r.get("share")), _pct_cell(r.get("uniform"))] for r in att["rows"]]
    head = ["model", "runs", "samples", "attention on distractor (mean over layers)",
            "uniform attention"]
    if any(r.get("reliance") for r in att["rows"]):  # the causal figures lead
        rel = [r.get("reliance") or {} for r in att["rows"]]
        rows = [row[:3] + [_pct_cell(x.get("follows_swap")), _pct_cell(x.get("correct")),
                           _pct_cell(x.get("correct_removed")), _num_cell(x.get("dlogp_swap")),
                           _num_cell(x.get("dlogp_removed"))] + row[3:]
                for row, x in zip(rows, rel, strict=True)]
        head = head[:3] + ["answer follows swapped distractor", "correct", "correct, removed",
                           "log p(correct) change, swapped", "log p(correct) change, removed"
                           ] + head[3:]
    return head, rows


def _num_cell(c: dict | None) -> str:
    """``mean [lo, hi]`` of a signed quantity (a log-probability change)."""
    return _cell(c, "+.2f")


def counts_line(results: dict) -> str:
    """Per data replicate: training samples, teacher right and student wrong, scored."""
    counts = results["counts"]
    reps = list(counts)
    per = lambda f: " / ".join(str(f(counts[d])) for d in reps)  # noqa: E731
    return (f"per data replicate ({' / '.join(reps)}): training samples "
            f"{per(lambda c: c['train'])}; teacher right and student wrong "
            f"{per(lambda c: c['teacher_right_student_wrong'])}; scored by detect "
            f"{per(lambda c: c['scored'])}")


def counts_table(results: dict) -> str:
    """Per data replicate: samples screened and scored, counterfactuals made and kept per set."""
    return counts_line(results) + "\n\n" + _table(*count_rows(results))


def has_planted(results: dict) -> bool:
    """Whether the run's data has planted spans to compare with (testbed data, or detection
    metrics or counterfactuals scored against them); a user's data has none."""
    if results.get("detection") or (results.get("data") or {}).get("testbed"):
        return True
    return any(s.get("kept_remove_planted") for c in (results.get("counts") or {}).values()
               for s in (c.get("sets") or {}).values())


def count_rows(results: dict, pooled: bool = False) -> tuple[list[str], list[list[str]]]:
    """The header and rows of :func:`counts_table`: per counterfactual set and replicate, how
    many were made, verified, rejected, the share kept (pooled over replicates) and, when the
    data has planted spans (:func:`has_planted`), how many kept ones remove the whole planted
    number. ``pooled``: totals over the replicates instead of one number per replicate."""
    counts = results["counts"]
    reps = list(counts)
    if pooled:
        per = lambda f: str(sum(f(counts[d]) for d in reps))  # noqa: E731
    else:
        per = lambda f: " / ".join(str(f(counts[d])) for d in reps)  # noqa: E731

    def kept_share(name: str) -> str:
        made = sum(counts[d]["sets"][name]["counterfactuals"] for d in reps)
        kept = sum(counts[d]["sets"][name]["counterfactuals"] - counts[d]["sets"][name]["rejected"]
                   for d in reps)
        return f"{100 * kept / made:.0f}%" if made else "-"

    names = list(counts[reps[0]]["sets"])
    planted = has_planted(results)
    rows = [[name, per(lambda c, n=name: c["sets"][n]["samples"]),
             per(lambda c, n=name: c["sets"][n]["counterfactuals"]),
             per(lambda c, n=name: c["sets"][n]["verified"]),
             per(lambda c, n=name: c["sets"][n]["rejected"]), kept_share(name),
             *([per(lambda c, n=name: c["sets"][n].get("kept_remove_planted", 0))]
               if planted else [])]
            for name in names]
    return (["counterfactual set", "samples", "counterfactuals", "verified", "rejected",
             "kept: not rejected (all replicates)",
             *(["kept, removing the whole planted number"] if planted else [])], rows)


TRUNCATION_STAGES = {  # results.json's stage -> (table label, the run config key that sets it)
    "screen_teacher": ("screen, teacher", "screen"),
    "screen_student": ("screen, student", "screen"),
    "verification": ("verification (counterfactuals)", "screen"),
    "evaluation": ("evaluation (every model and split)", "evaluate"),
}


def truncation_rows(results: dict) -> tuple[list[str], list[list[str]]] | None:
    """Per generating stage: the answer budget, answers generated and how many were cut at
    it (graded wrong); None for a results.json from before leaf counted them."""
    got = results.get("truncated")
    if not got:
        return None
    budget = got.get("max_new_tokens") or {}
    rows = []
    for stage, (label, section) in TRUNCATION_STAGES.items():
        c = (got.get("stages") or {}).get(stage)
        if not c or not c.get("answers"):
            continue
        share = f"{100 * c['cut'] / c['answers']:.1f}%"
        warn = f"raise {section}.max_new_tokens" if too_many_cut(c["cut"], c["answers"]) else ""
        rows.append([label, str(budget.get(section, "-")), str(c["answers"]), str(c["cut"]),
                     share + (f" ({warn})" if warn else "")])
    if not rows:
        return None
    return ["stage", "max_new_tokens", "answers", "cut (graded wrong)", "share cut"], rows


def truncation_table(results: dict) -> str | None:
    """:func:`truncation_rows` as a table."""
    got = truncation_rows(results)
    return _table(*got) if got else None


def truncation_note(results: dict) -> str:
    """What the truncation table counts, and which evaluations had cut answers."""
    note = ("an answer still unfinished at max_new_tokens is cut, graded wrong and counted "
            "here, never graded by the number it stopped at; more than "
            f"{100 * WARN_SHARE:g}% cut in a stage means its accuracies measure the budget, not "
            "the model: raise the key named.")
    models = (results.get("truncated") or {}).get("models") or {}
    if models:
        note += " Evaluations with cut answers: " + "; ".join(
            f"{m} " + ", ".join(f"{SPLIT_LABELS.get(s, s)} {n}" for s, n in by.items())
            for m, by in models.items()) + "."
    return note


def signal_rows(results: dict) -> tuple[list[str], list[list[str]]] | None:
    """Per verified set: forward KL(teacher || student) on the response tokens of its kept
    counterfactuals and of their originals, per row and per token, and their ratio (one
    figure per data replicate, ``leaf prune``'s measure); None when no set has one."""
    counts = results.get("counts") or {}
    reps = list(counts)
    names = [n for n in (counts[reps[0]]["sets"] if reps else {})
             if any(counts[d]["sets"].get(n, {}).get("signal") for d in reps)]
    if not names:
        return None

    def per(name: str, key: str, fmt: str) -> str:
        values = [(counts[d]["sets"].get(name, {}).get("signal") or {}).get(key) for d in reps]
        return " / ".join("-" if v is None else format(v, fmt) for v in values)

    rows = [[name, per(name, "counterfactuals", "d"), per(name, "cf_kl_row", ".3f"),
             per(name, "orig_kl_row", ".3f"), per(name, "ratio_row", ".2f"),
             per(name, "cf_kl_token", ".4f"), per(name, "orig_kl_token", ".4f"),
             per(name, "ratio_token", ".2f")] for name in names]
    return (["counterfactual set", "kept", "KL per row: kept counterfactuals", "their originals",
             "ratio", "KL per token: kept counterfactuals", "their originals", "ratio"], rows)


def signal_low_sets(results: dict) -> list[str]:
    """The verified sets whose kept counterfactuals carry less than a quarter of their
    originals' KL per row (in any data replicate)."""
    counts = results.get("counts") or {}
    low = []
    for d in counts:
        for name, c in counts[d]["sets"].items():
            ratio = (c.get("signal") or {}).get("ratio_row")
            if ratio is not None and ratio < LOW_RATIO and name not in low:
                low.append(name)
    return low


SIGNAL_NOTE = (
    "mean forward KL(teacher || student before distillation), temperature 1, summed over the "
    "response tokens distillation trains on, for the counterfactuals verification kept and for "
    "the originals they came from (one figure per data replicate; docs/pruning.md, 'How much "
    "the counterfactuals teach'). A ratio well below 1: the counterfactual term trains on rows "
    "the student already matches.")


def signal_table(results: dict) -> str | None:
    """The counterfactual-signal table with its note and, for low sets, the plain warning."""
    rows = signal_rows(results)
    if rows is None:
        return None
    out = _table(*rows) + "\n\n" + SIGNAL_NOTE
    low = signal_low_sets(results)
    if low:
        out += f"\n\n{', '.join(low)}: {LOW_SIGNAL_LINE}."
    return out


def span_vs_collective_table(results: dict) -> str | None:
    """LeaF (instruction) with span pruning next to collective pruning, when both ran."""
    keys = [r["key"] for r in results["rows"]]
    if "leaf_instr" not in keys or "leaf_collective" not in keys:
        return None
    return accuracy_table(results, ["leaf_instr", "leaf_collective"])


DIFFERENCES_NOTE = (
    "accuracy of each variant minus KD w/o mask's, run by run (the two runs of a seed share "
    "data and originals) and item by item; mean [95% interval: hierarchical bootstrap over "
    "seeds, then test items, docs/intervals.md; Student-t over the pairs when per-item scores "
    "are missing]; an interval that excludes 0 is a difference the runs show. 'smallest "
    "detectable' (shown with one seed or few items): the difference these runs would show "
    "four times out of five, about 1.43 half-widths. Runs whose variant had no "
    "counterfactual to train on are left out.")
ACCURACY_NOTE = (
    "lambda: the weight of the standard-distillation term in each variant's loss ('uniform': "
    "no lambda, every target token weighs the same). mean [95% interval] over runs (one run "
    "per seed; with testbed data each seed also draws its own splits): hierarchical bootstrap "
    "over runs, then test items (docs/intervals.md); without per-item scores Student-t over "
    ">= 2 runs (clipped to [0, 1]), Wilson over test samples with one.")


RELIANCE_NOTE = (
    "Reliance (the causal figures, first): each anti-correlated item is answered again with its "
    "distractor's number swapped for another wrong value and with it removed; 'answer follows "
    "swapped distractor' is the share of answers equal to the new value, 'correct' / 'correct, "
    "removed' the accuracy on the original and on the distractor-free input, and the log p "
    "changes are the mean change of the correct response's log-probability (positive on "
    "removal: the distractor was pulling the model away). Attention share, the secondary "
    "figure: ")


def attention_note(results: dict) -> str:
    """What the attention table's numbers are."""
    a = results.get("attention") or {}
    lead = RELIANCE_NOTE if any(r.get("reliance") for r in a.get("rows") or []) else ""
    return lead + (f"share of each response token's attention (averaged over heads, response tokens "
            f"and layers) that lands on the planted {a.get('planted_part')} tokens, on the "
            f"{SPLIT_LABELS.get(a.get('split'), a.get('split'))} test split; 'uniform "
            "attention' is the share a model attending uniformly over its causal context would "
            "give. mean [95% interval]: Student-t over runs with >= 2 runs, else over samples.")


def render(results: dict) -> str:
    """Every table of a run, with headings and the intervals explained."""
    title = f"{results['name']}{', quick' if results.get('quick') else ''}"
    parts = []
    diff = differences_table(results)
    if diff:
        parts += [f"## LeaF minus KD, paired by seed ({title})", "", diff, "",
                  DIFFERENCES_NOTE, ""]
        low = lowered_line(results)
        if low:
            parts += [low, ""]
        line = verdict(results)
        if line:
            parts += [line, ""]
    parts += [
        f"## Accuracy ({title})",
        "",
        accuracy_table(results),
        "",
        ACCURACY_NOTE,
        "",
    ]
    cut = truncation_table(results)
    if cut:
        parts += ["## Answers cut at max_new_tokens", "", cut, "", truncation_note(results), ""]
    if detection_rows(results):  # only data with planted spans has them
        parts += ["## Detection against the planted spans", "", detection_table(results), ""]
    parts += [
        "## Counterfactuals",
        "",
        counts_table(results),
    ]
    signal = signal_table(results)
    if signal:
        parts += ["", "## Counterfactual signal (before distillation)", "", signal]
    pair = pair_check_table(results)
    if pair:
        parts += ["", "## Pair check: teacher and student before distillation", "", pair]
    att = attention_table(results)
    if att:
        parts += ["", "## Attention on the planted distractor", "", att, "",
                  attention_note(results)]
    svc = span_vs_collective_table(results)
    if svc:
        parts += ["", "## Span vs collective pruning", "", svc]
    return "\n".join(parts) + "\n"


__all__ = ["LABELS", "accuracy_table", "differences_table", "detection_table", "counts_table", "attention_table",
           "signal_table", "span_vs_collective_table", "truncation_table", "render"]
