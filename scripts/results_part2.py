"""docs/RESULTS.md part 2: the second study (docs/study2.md), from its run folders.

Used by ``scripts/make_results.py --study2 OUT`` (``bash scripts/run_study2.sh results OUT``).
``OUT`` holds the runs ``scripts/run_study2.sh`` makes: ``r1-nl00``, ``r1-nl03``, ``r1-nl15``,
``r2`` (each a ``leaf run`` directory with results.json), the pilot's ``pilot-nl00`` ...
``pilot-nl15`` and its decision ``pilot/decision.json``. Whatever is missing is named on the
page. Every number is read from those folders (the unverified sets' counterfactual signal,
which the runs do not measure, from ``<run>/extra_signal/`` when ``scripts/study2_signal.py``
has written it); the verdicts are leaf.testbed.study2's; the caveats are fixed text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leaf.pipeline.config import SPLIT_LABELS
from leaf.pipeline.results import read_item_scores
from leaf.pipeline.tables import format_cell, render
from leaf.testbed.study import Part
from leaf.testbed.study2 import (
    ANTI,
    DOSES,
    HYPOTHESES,
    R1_RUNS,
    RUNS,
    SHIFTED,
    STUDY_SEEDS,
    kept_signal,
    leaf_set,
    restrict_seeds,
    shifted_splits,
    verdicts2,
    within,
)

#: How the pilot as run differed from docs/study2.md's description (fixed text, written when it
#: was noticed, after the pilot and before any R1 or R2 result).
PILOT_DEVIATION = (
    "- deviation from docs/study2.md: the pilot distilled all seven R1 variants, not `kd` plus "
    "one variant holding every counterfactual set (a `--set` of `distill.variants` merges with "
    "the config's variants instead of replacing them); as written, only training-data figures "
    "(kept counts, signal, KD's training loss) were read, and no pilot test result was looked "
    "at.")

#: The heading part 2 starts at; everything before it in docs/RESULTS.md is part 1, kept as is.
MARKER = "# Part 2: the second study (docs/study2.md)"
PILOTS = {"pilot-nl00": "0%", "pilot-nl03": "3%", "pilot-nl15": "15%"}
SCOPES = {"r1-nl00": "R1 dose 0%", "r1-nl03": "R1 dose 3%", "r1-nl15": "R1 dose 15%",
          "r1-nl00 vs r1-nl15": "R1 0% vs 15%", "r2": "R2"}

CAVEATS = """\
- The testbed is synthetic: one planted confounder per sample (a number in a distractor
  sentence), chosen so that the distractor's influence can be measured exactly. It shows whether
  the mechanics of LeaF work where the counterfactuals carry signal; it says nothing about the
  size of the effect on real LLMs and real benchmarks.
- Teacher and students are tiny models trained from scratch, and everything ran on CPU (the
  machine above); the dose students differ only in the share of numberless rows in their
  pre-training.
- The hypotheses, the verdict rule, the pilot's rules and the configs (docs/study2.md,
  configs/study2/) were committed before any run of this study; nothing was tuned on the test
  splits. An interval that contains 0 is "no difference shown", which is not evidence of no
  difference; the detectable difference says how large a difference the runs could miss.
"""


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_items(run: Path) -> Callable[[str, str], dict[str, float] | None]:
    """``items(member, split)``: a member's per-item scores on a split, read from the run's
    ``eval/<model>/<data key>/<split>/metrics.samples.jsonl`` (None when absent)."""
    cache: dict[tuple[str, str], dict[str, float] | None] = {}

    def items(member: str, split: str) -> dict[str, float] | None:
        if (member, split) not in cache:
            key, dkey = member.rsplit("@", 1)
            cache[member, split] = read_item_scores(run / "eval" / key / dkey / split
                                                    / "metrics.json")
        return cache[member, split]

    return items


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _diff(c: dict | None) -> str:
    return format_cell(c, "+") if c else "n/a"


def _det(c: dict | None) -> str:
    d = (c or {}).get("detectable")
    return "-" if d is None else f"{d:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def verdict_table(v: dict[str, Any]) -> list[str]:
    """Hypothesis x regime/dose: each hypothesis is read where docs/study2.md places it."""
    rows = []
    for hid, h in v["hypotheses"].items():
        spec = HYPOTHESES[hid]
        word = h["verdict"] + (" (note)" if h["notes"] else "") + (
            " (P rule)" if h["flags"] else "") + (" (seeds 0-7)" if h.get("p_read") else "")
        rows.append([f"{hid}{' (P)' if spec.primary else ''}: {spec.text}",
                     *(word if scope == spec.run else "" for scope in SCOPES)])
    return _table(["hypothesis", *SCOPES.values()], rows)


def falsification_lines(v: dict[str, Any]) -> list[str]:
    f = v["falsification"]
    if not f["evaluated"]:
        return [f"Falsification clause (docs/study2.md, R1): not evaluated ({f['reason']})."]
    arms = "; ".join(f"{a['arm']} - kd on test_anti {_diff(a['cell'])}" for a in f["arms"])
    if f["fired"]:
        return [f"**Falsified on this testbed: \"exact removal of the confounder helps where the "
                f"counterfactuals carry signal\"** (docs/study2.md, R1 falsification clause: at "
                f"dose 0%, an oracle arm's mean at or below 0 with an upper 95% end below "
                f"+0.03; {arms}" + ("" if f["signal_check_passed"] else
                                    "; the pilot's signal check failed, so only planted_all "
                                    "was read") + ")."]
    return [f"Falsification clause (docs/study2.md, R1): did not fire ({arms}"
            + ("" if f["signal_check_passed"] else "; signal check failed: planted_all only")
            + ")."]


def comparison_lines(v: dict[str, Any]) -> list[str]:
    lines = ["## The comparisons behind each verdict", "",
             "Within a run: paired by seed and test item (hierarchical bootstrap, docs/"
             "intervals.md); reliance paired by seed. Across doses or splits: per seed, the "
             "difference of the seed's paired mean differences, 95% Student-t over seeds. "
             "detectable: the difference the runs would show four times out of five.", ""]
    for hid, h in v["hypotheses"].items():
        head = f"### {hid}: {h['verdict']}"
        lines += [head, ""]
        if h.get("precondition"):
            lines += [f"Precondition: {h['precondition']['reason']}.", ""]
        if h.get("splits"):
            lines += ["Shifted splits: " + "; ".join(f"{s} ({i['reason']})"
                                                      for s, i in h["splits"].items()) + ".", ""]
        if h["reason"]:
            lines += [f"{h['verdict'].capitalize()}: {h['reason']}.", ""]
        if h["parts"]:
            rows = []
            for p in h["parts"]:
                left = p.get("runs_without_counterfactuals")
                extra = ""
                if p.get("first_mean") is not None:
                    extra = f" (first {p['first_mean']:+.3f}, second {p['second_mean']:+.3f})"
                rows.append([f"{p['a']} - {p['b']}", p["measure"], f"{p['predicted']} 0",
                             _diff(p["cell"]) + extra, _det(p["cell"]),
                             f"{p['pairs']}" + (f" ({left} left out)" if left else ""),
                             p["verdict"]])
            lines += _table(["comparison", "measure", "predicted", "difference [95%]",
                             "detectable", "pairs", "verdict"], rows) + [""]
        lines += ([f"Note: {n}." for n in h["notes"]] + [f"Flag: {f}." for f in h["flags"]]
                  + [f"Seeds: {r}." for r in h.get("p_read", [])])
        if h["notes"] or h["flags"] or h.get("p_read"):
            lines.append("")
    return lines


def _epoch_means(state: dict[str, Any] | None) -> dict[int, float]:
    """Mean logged training loss per epoch (a log at epoch 1.0 closes epoch 1)."""
    by: dict[int, list[float]] = {}
    for e in (state or {}).get("log_history") or []:
        if "loss" in e and e.get("epoch"):
            by.setdefault(max(1, math.ceil(e["epoch"])), []).append(float(e["loss"]))
    return {k: sum(v) / len(v) for k, v in sorted(by.items())}


def kd_curves(out: Path, names: list[str]) -> list[str]:
    """KD's training loss per epoch in the study's run folders ``names`` (the finished ones):
    the mean over seeds 0-4 of :func:`_epoch_means` of
    ``distill/kd/seed<S>/model/trainer_state.json``, with the last epoch's change from the one
    before (the budget the pilot fixed, seen to its end)."""
    curves: dict[str, dict[int, float]] = {}
    for name in names:
        per_seed = [_epoch_means(_load(out / name / "distill" / "kd" / f"seed{s}" / "model"
                                       / "trainer_state.json")) for s in STUDY_SEEDS]
        per_seed = [c for c in per_seed if c]
        if not per_seed:
            continue
        epochs = sorted(set.intersection(*(set(c) for c in per_seed)))
        curves[name] = {e: sum(c[e] for c in per_seed) / len(per_seed) for e in epochs}
    if not curves:
        return ["(no KD training logs found)"]
    names = list(curves)
    epochs = sorted({e for c in curves.values() for e in c})
    rows = [[str(e), *(f"{curves[n][e]:.4f}" if e in curves[n] else "-" for n in names)]
            for e in epochs]

    def change(c: dict[int, float]) -> float | None:
        last = sorted(c)[-2:]
        return None if len(last) < 2 or not c[last[0]] else (c[last[1]] - c[last[0]]) / c[last[0]]

    changes = [change(curves[n]) for n in names]
    rows.append(["last epoch vs the one before",
                 *("-" if c is None else f"{100 * c:+.1f}%" for c in changes)])
    rows.append(["converged by the pilot's rule (within 5%)",
                 *("-" if c is None else "yes" if abs(c) <= 0.05 else "no" for c in changes)])
    return _table(["epoch", *(SCOPES.get(n, n) for n in names)], rows)


def extra_signal(run: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{set: {data key: file}}``: the unverified sets' signal files that
    ``scripts/study2_signal.py`` wrote for the run folder ``run`` (``run/extra_signal/``);
    files without figures are left out."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(run.glob("extra_signal/*/*.signal.json")):
        data = _load(path)
        if data and data.get("figures"):
            found.setdefault(path.name.removesuffix(".signal.json"), {})[path.parent.name] = data
    return found


def _extra_figures(files: dict[str, dict[str, Any]]) -> tuple[dict[str, float | None], str]:
    """An unverified set's figures averaged over its replicates (as :func:`kept_signal`
    averages the verified ones) and its mark: "(unverified)", with "sampled N of M" per
    replicate where the counterfactuals were sampled."""
    means: dict[str, float | None] = {}
    for key in ("cf_kl_row", "orig_kl_row", "ratio_row"):
        values = [f["figures"][key] for f in files.values() if f["figures"].get(key) is not None]
        means[key] = sum(values) / len(values) if values else None
    samples = [f.get("sample") for f in files.values()]
    drawn = sorted({f"sampled {s['sampled']} of {s['of']}" for s in samples if s})
    return means, "(unverified" + ("; " + ", ".join(drawn) if drawn else "") + ")"


def _kept(res: dict[str, Any], set_name: str) -> list[Any]:
    """The set's kept count per data replicate of ``res`` (None where it was not counted)."""
    return [((c.get("sets") or {}).get(set_name) or {}).get("kept")
            for c in (res.get("counts") or {}).values()]


def signal_table(res: dict[str, Any], extra: dict[str, dict[str, dict[str, Any]]] | None = None
                 ) -> list[str]:
    """Per counterfactual set: kept per replicate, pre-KD KL per row (kept and their originals,
    averaged over replicates) and the ratio. An unverified set has no figures in results.json;
    they come from ``extra`` (:func:`extra_signal`) when measured, marked as such."""
    counts = res.get("counts") or {}
    names = list((res.get("counterfactual_sets") or {}) or
                 next(iter(counts.values()), {}).get("sets", {}))
    rows = []
    for name in names:
        kept = " / ".join("-" if k is None else str(k) for k in _kept(res, name))
        cf, orig = kept_signal(res, name), kept_signal(res, name, "orig_kl_row")
        ratio = kept_signal(res, name, "ratio_row")
        if cf is None and (extra or {}).get(name):
            means, mark = _extra_figures(extra[name])
            cf, orig, ratio = means["cf_kl_row"], means["orig_kl_row"], means["ratio_row"]
            name = f"{name} {mark}"
        rows.append([name, kept or "-", "-" if cf is None else f"{cf:.3f}",
                     "-" if orig is None else f"{orig:.3f}",
                     "-" if ratio is None else f"{ratio:.2f}"])
    table = _table(["counterfactual set", "kept (per replicate)", "pre-KD KL per row: kept",
                    "their originals", "ratio"], rows)
    if any("(unverified" in r[0] for r in rows):
        table += ["", "(unverified): not measured by the run (no verification); measured after "
                  "it by scripts/study2_signal.py with the same functions, on every "
                  "counterfactual of the set or, where marked, a seeded uniform sample per "
                  "replicate."]
    return table


#: The variants the dose-response table sets against kd (docs/study2.md, R1-H1 to R1-H3).
DOSE_VARIANTS = ("leaf", "planted", "planted_all", "unverified", "extra_kd_random")


def dose_table(runs: dict[str, dict[str, Any]], items: dict[str, Any],
               extra: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> list[str]:
    """One row per R1 dose: LeaF's kept counterfactuals (mean count per replicate) and their
    pre-KD KL per row beside their originals', the unverified set's KL per row, and each of
    :data:`DOSE_VARIANTS` minus kd on test_anti; everything over seeds 0-4, as the verdicts
    read them."""
    rows = []
    for name in R1_RUNS:
        res = runs.get(name)
        if res is None:
            rows.append([DOSES[name], "not finished", *["-"] * (3 + len(DOSE_VARIANTS))])
            continue
        head = restrict_seeds(res, STUDY_SEEDS)
        variants = res.get("variants") or {}
        leaf = leaf_set(res)
        kept = [k for k in _kept(head, leaf) if isinstance(k, (int, float))]
        unv = ((variants.get("unverified") or {}).get("sets") or [None])[0]
        files = {k: f for k, f in ((extra.get(name) or {}).get(unv) or {}).items()
                 if k in head["counts"]}
        unv_kl = _extra_figures(files)[0]["cf_kl_row"] if files else None
        cells = [_diff(within(head, Part(v, "kd", ANTI), items.get(name))["cell"])
                 if v in variants else "-" for v in DOSE_VARIANTS]
        rows.append([DOSES[name], f"{sum(kept) / len(kept):.1f}" if kept else "-",
                     _fmt(kept_signal(head, leaf)) if leaf else "-",
                     _fmt(kept_signal(head, leaf, "orig_kl_row")) if leaf else "-",
                     _fmt(unv_kl), *cells])
    return _table(["dose", "LeaF kept per replicate", "pre-KD KL per row: LeaF kept",
                   "their originals", "unverified set",
                   *(f"{v} - kd, anti [95%]" for v in DOSE_VARIANTS)], rows)


def pilot_lines(out: Path, signals: Path | None = None) -> list[str]:
    """The pilot's decision, signal tables and KD curves; the unverified sets' signal files are
    read under ``signals`` (default ``out``: scripts/study2_signal.py's layout)."""
    decision = _load(out / "pilot" / "decision.json")
    pilots = {name: _load(out / name / "results.json") for name in PILOTS}
    lines = ["### Pilot (training data only; docs/study2.md, \"Pilot\")", ""]
    if decision:
        conv = decision.get("kd_converged")
        lines += [f"- decision (pilot/decision.json): training rows N = "
                  f"{decision.get('train_rows')}, epochs = {decision.get('epochs')}"
                  + (" (KD converged by the rule, third epoch's mean loss within 5% of the "
                     "second's: " + ", ".join(f"dose {DOSES.get('r1-' + d, d)} "
                                             f"{'yes' if c else 'no'}" for d, c in conv.items())
                     + ")" if conv else "")
                  + f"; kept/original KL ratio at dose 0% = {_fmt(decision.get('signal_ratio'))}"
                  f" (check: at least 0.5): signal check "
                  f"{'passed' if decision.get('signal_check_passed') else 'failed'}"]
        lines += [PILOT_DEVIATION]
    else:
        lines += ["- no pilot decision yet (pilot/decision.json missing)"]
    missing = [n for n, r in pilots.items() if r is None]
    if missing:
        lines += [f"- pilot runs missing: {', '.join(missing)}"]
    lines.append("")
    figures = (decision or {}).get("figures") or {}  # scripts/study2_pilot.py's copy
    for name, res in pilots.items():
        if res is not None:
            lines += [f"Dose {PILOTS[name]} ({name}): kept counterfactuals and their signal", "",
                      *signal_table(res, extra_signal((signals or out) / name)), ""]
        elif (fig := figures.get(name.removeprefix("pilot-"))) and fig.get("sets"):
            lines += [f"Dose {PILOTS[name]} (pilot/decision.json): kept counterfactuals and "
                      "their signal", "", *_table(
                          ["counterfactual set", "kept", "pre-KD KL per row: kept",
                           "their originals", "ratio"],
                          [[n, str(s.get("kept")), *(_fmt((s.get("signal") or {}).get(k))
                                                     for k in ("cf_kl_row", "orig_kl_row",
                                                               "ratio_row"))]
                           for n, s in fig["sets"].items()]), ""]
    curves = {}
    for name in PILOTS:
        state = _load(out / name / "distill" / "kd" / "seed0" / "model" / "trainer_state.json")
        fig = (figures.get(name.removeprefix("pilot-")) or {}).get("kd_epoch_means") or {}
        curves[name] = _epoch_means(state) if state else {int(e): m for e, m in fig.items()}
    epochs = sorted({e for c in curves.values() for e in c})
    if epochs:
        lines += ["KD's training loss (pilot, seed 0): mean of the losses logged every 25 "
                  "steps, per epoch", "",
                  *_table(["epoch", *(f"dose {PILOTS[n]}" for n in PILOTS)],
                          [[str(e), *(f"{curves[n][e]:.4f}" if e in curves[n] else "-"
                                      for n in PILOTS)] for e in epochs]), ""]
    return lines


def difference_table(res: dict[str, Any], items) -> list[str]:
    """Every variant minus kd on every split, with its interval and detectable difference."""
    variants = [k for k in (res.get("variants") or {}) if k != "kd"]
    rows = []
    for v in variants:
        cells = [within(res, Part(v, "kd", s), items)["cell"] for s in res["splits"]]
        rows.append([f"{v} - kd", *(f"{_diff(c)} (det {_det(c)})" for c in cells)])
    return _table(["difference", *(SPLIT_LABELS.get(s, s) for s in res["splits"])], rows)


def reliance_table(res: dict[str, Any]) -> list[str]:
    fields = ("follows", "follows_swap", "correct_swap", "correct_removed", "dlogp_swap",
              "dlogp_removed")
    rows = []
    for row in (res.get("attention") or {}).get("rows") or []:
        rel = row.get("reliance") or {}
        share = row.get("share")
        rows.append([row.get("label") or row["key"],
                     *(format_cell(rel.get(f)) if rel.get(f) else "-" for f in fields),
                     format_cell({k: None if share.get(k) is None else 100 * share[k]
                                  for k in ("mean", "lo", "hi")}) + " %" if share else "-"])
    if not rows:
        return ["(no reliance measured in this run)"]
    return _table(["model", "follows the distractor", "follows the swapped value",
                   "correct after swap", "correct after removal", "dlogp swap", "dlogp removed",
                   "attention on distractor (secondary)"], rows)


def run_lines(name: str, run: Path, res: dict[str, Any], items, v: dict[str, Any],
              extra: dict[str, dict[str, dict[str, Any]]] | None = None) -> list[str]:
    label = DOSES.get(name)
    lines = [f"### {name}" + (f" (dose {label})" if label else ""), "",
             f"Config `{Path(res.get('config_path') or '?').name}`; teacher `{res['teacher']}`, "
             f"student `{res['student']}`; seeds {res['seeds']}; data "
             f"`{json.dumps(res.get('data'))}`.", "",
             "Pre-KD counterfactual signal and kept counts:", "", *signal_table(res, extra), "",
             "Every variant minus kd (95% interval; det: detectable difference):", "",
             *difference_table(res, items), "",
             "Reliance on the distractor per variant (leaf.evaluate.reliance; 95% interval "
             "over seeds):", "", *reliance_table(res), ""]
    extra_seeds = [s for s in res["seeds"] if s not in STUDY_SEEDS]
    if extra_seeds:
        lines[2:2] = [f"This run also holds seeds {extra_seeds}, added by the P rule "
                      "(docs/study2.md) for the comparisons marked (seeds 0-7) above. The "
                      "tables of this run are over all its seeds; every verdict and the "
                      "comparisons reported beside them read seeds 0-4 except those.", ""]
    reported = v["reported"].get(name) or []
    if reported:
        lines += ["Reported beside the verdicts, without a hypothesis:", "",
                  *_table(["comparison", "split", "difference [95%]", "detectable", "pairs"],
                          [[f"{p['a']} - {p['b']}", p["measure"], _diff(p["cell"]),
                            _det(p["cell"]), str(p["pairs"])] for p in reported]), ""]
    lines += [render(res).replace("\n## ", "\n#### ").replace("## ", "#### ", 1), ""]
    return lines


def part2(out: Path, machine: list[str] | None = None, signals: Path | None = None) -> str:
    """The text of part 2 (from :data:`MARKER` on) from the run folders under ``out``; the
    unverified sets' signal (scripts/study2_signal.py) is read under ``signals`` (default
    ``out``)."""
    sig = signals or out
    runs = {name: _load(out / name / "results.json") for name in RUNS}
    runs = {k: r for k, r in runs.items() if r is not None}
    # a run with fewer replicates than the design's is still running: no interim verdict
    progress = {k: r.get("seeds") or [] for k, r in runs.items()
                if not set(STUDY_SEEDS) <= set(r.get("seeds") or [])}
    runs = {k: r for k, r in runs.items() if k not in progress}
    items = {name: run_items(out / name) for name in runs}
    decision = _load(out / "pilot" / "decision.json")
    v = verdicts2(runs, decision, items)
    lines = [MARKER, "",
             "Generated by `scripts/make_results.py --study2 OUT` (`bash scripts/run_study2.sh "
             "results OUT`) from the second study's run folders; do not edit by hand. The "
             "question, the hypotheses and the verdict rule are docs/study2.md's, committed "
             "before any of these runs.", ""]
    if v["falsification"]["fired"]:
        lines += falsification_lines(v) + [""]
    running = [f"{k} ({len(seeds)} of {len(STUDY_SEEDS)} seeds so far)"
               for k, seeds in progress.items()]
    lines += [f"Runs found in `{out}`: {', '.join(v['present']) or 'none'}; "
              f"missing: {', '.join(m for m in v['missing'] if m not in progress) or 'none'}"
              + (f"; still running (no verdict or table is read from them until every seed "
                 f"of the design has run): {', '.join(running)}" if running else "") + ".", "",
              "## Verdicts", "", *verdict_table(v), "",
              "(note): printed with the note \"" + "verified counterfactuals below half their "
              "originals' signal\" (the pilot's signal check failed). (P rule): a primary "
              "comparison with a detectable difference above 0.03 after 5 seeds; docs/study2.md "
              "adds seeds 5-7 to it before its verdict is read, and they have not run yet. "
              "(seeds 0-7): such a comparison, read over seeds 0-7 once they ran. Every other "
              "verdict reads seeds 0-4.", ""]
    if not v["falsification"]["fired"]:
        lines += falsification_lines(v) + [""]
    lines += comparison_lines(v)
    extras = {name: extra_signal(sig / name) for name in runs}  # unverified sets' signal
    lines += ["## Regime R1: a causal path starved of gradient", "", *pilot_lines(out, sig),
              "### Dose response (test_anti; seeds 0-4, as the verdicts read them)", "",
              *dose_table(runs, items, extras), "",
              "Pre-KD KL per row: forward KL(teacher || student before distillation) on the "
              "response tokens, per row, measured at verification (the unverified set: by "
              "scripts/study2_signal.py). The prediction (R1-H3) is that the differences to kd "
              "grow with the kept counterfactuals' KL, i.e. are largest at dose 0%.", ""]
    lines += ["### KD's training loss over the runs' budget", "",
              "Mean over seeds 0-4 of each epoch's mean logged loss (every 25 steps) of the kd "
              "variant, per run (the learning rate decays to 0 over the budget, so a flat last "
              "epoch is also the schedule's doing):", "",
              *kd_curves(out, [n for n in RUNS if n in runs]), ""]
    for name in R1_RUNS:
        if name in runs:
            lines += run_lines(name, out / name, runs[name], items[name], v, extras[name])
        else:
            lines += [f"### {name} (dose {DOSES[name]})", "",
                      "Still running." if name in progress else "Not run yet.", ""]
    lines += ["## Regime R2: distractor shift", ""]
    if "r2" in runs:
        info = shifted_splits(runs["r2"])
        lines += ["Teacher accuracy on every shifted split (below 0.95: left out of the "
                  "verdicts):", "",
                  *_table(["split", "teacher accuracy", "in the verdicts"],
                          [[s, "-" if i["teacher"] is None else f"{i['teacher']:.3f}",
                            "yes" if i["kept"] else f"no ({i['reason']})"]
                           for s, i in info.items()]), "",
                  *run_lines("r2", out / "r2", runs["r2"], items["r2"], v, extras["r2"])]
    else:
        lines += [("Still running" if "r2" in progress else "Not run yet")
                  + " (shifted splits: " + ", ".join(SHIFTED) + ").", ""]
    if machine:
        lines += ["## Machine (where this page was generated)", "",
                  *[f"- {m}" for m in machine], ""]
    lines += ["## What these numbers do not show", "", CAVEATS]
    return "\n".join(lines)


def split_parts(text: str) -> tuple[str, str | None]:
    """``(part 1, part 2 or None)`` of a RESULTS.md: part 2 starts at :data:`MARKER` on a line
    of its own."""
    at = text.find("\n" + MARKER + "\n")
    if text.startswith(MARKER + "\n"):
        return "", text
    if at < 0:
        return text, None
    return text[:at + 1], text[at + 1:]


def with_part2(existing: str, part2_text: str) -> str:
    """``existing`` with its part 2 replaced (or appended after a blank line); part 1's bytes
    are kept exactly."""
    part1, _ = split_parts(existing)
    sep = "" if not part1 or part1.endswith("\n\n") else ("\n" if part1.endswith("\n") else "\n\n")
    return part1 + sep + part2_text
