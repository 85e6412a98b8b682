"""Verdicts of the second testbed study (docs/study2.md) read off its runs' ``results.json``.

The runs are named as ``scripts/run_study2.sh`` names them: ``r1-nl00``, ``r1-nl03``,
``r1-nl15`` (regime R1 at the three doses of numberless pre-training rows) and ``r2`` (the
distractor shift). The hypotheses are data (:data:`HYPOTHESES`); the rule is docs/study2.md's:

- a difference within one run is paired by seed and test item (:func:`leaf.testbed.study.compare`
  with per-item scores, or the item-paired ``variant - kd`` difference ``leaf run`` stored in
  ``results.json``); the reliance measure (``reliance_follow``: the share of swapped items whose
  answer follows the new distractor value) is paired by seed;
- a difference of differences across two runs (R1-H3: two doses) or two splits (R2-H2) is taken
  per seed from the seeds' paired mean differences, members matched by seed, with a 95%
  Student-t interval over the seeds (:func:`across`);
- "A > B" is supported when the interval lies above 0, contradicted when below, inconclusive
  otherwise; several parts: supported when all are, contradicted when any is;
- a hypothesis whose run is missing is "not run yet"; one whose precondition fails, or whose
  numbers were not measured, is "not tested" (with the reason).

Every cell carries its detectable difference. Every verdict reads seeds 0-4
(:data:`STUDY_SEEDS`), whatever else a run folder holds, except where the pre-registered P rule
applies: a primary comparison with a detectable difference above 0.03 over seeds 0-4 gets seeds
5-7 before its verdict is read. Such a part is flagged while its run lacks seeds 5-7 and is read
over seeds 0-7 once it has them (:func:`restrict_seeds`); this module never runs anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from leaf.intervals import (
    detectable_difference,
    seed_members,
    seeds_without_counterfactuals,
    t_interval,
)
from leaf.testbed.study import (
    Part,
    combine,
    compare,
    part_result,
    word,
)
from leaf.testbed.tasks import SHIFT_SPLITS

NOT_TESTED, NOT_RUN = "not tested", "not run yet"
R1_RUNS = ("r1-nl00", "r1-nl03", "r1-nl15")
RUNS = (*R1_RUNS, "r2")
DOSES = {"r1-nl00": "0%", "r1-nl03": "3%", "r1-nl15": "15%"}
#: R2's shifted test splits (docs/study2.md, "Regime R2"); every distractor disagrees.
SHIFTED = tuple(SHIFT_SPLITS)
#: A shifted split on which the teacher scores below this is reported and left out.
TEACHER_FLOOR = 0.95
#: The P rule: a primary comparison whose detectable difference exceeds this after
#: ``P_SEEDS`` seeds gets seeds 5, 6 and 7 before its verdict is read.
P_DETECTABLE, P_SEEDS = 0.03, 5
#: The replicates every cell of the design runs (docs/study2.md: seeds 0-4); a run folder with
#: fewer is still running and no verdict is read from it.
STUDY_SEEDS = (0, 1, 2, 3, 4)
#: The seeds the P rule adds to a primary cell whose detectable difference is above 0.03.
P_ADDED_SEEDS = (5, 6, 7)
#: The falsification clause: a mean at or below 0 with an upper 95% end below this.
FALSIFY_UPPER = 0.03
SIGNAL_NOTE = "verified counterfactuals below half their originals' signal"
FALSIFIED = ("exact removal of the confounder helps where the counterfactuals carry signal")
#: Stands for each shifted split R2 keeps, in a hypothesis's parts.
EACH_SHIFTED = "<each shifted split>"


@dataclass(frozen=True)
class Across:
    """``(a - b)`` on ``first`` minus ``(a - b)`` on ``second``, each a ``(run, split)``, per
    seed; predicted ``>`` 0."""

    a: str
    b: str
    first: tuple[str, str]
    second: tuple[str, str]
    predicted: str = ">"


@dataclass(frozen=True)
class Hypothesis:
    """One pre-registered hypothesis: its parts (within ``run``, or :class:`Across`), whether it
    is primary (P), and whether it is read only when the dose doses (R1-H3)."""

    text: str
    run: str
    parts: tuple[Part | Across, ...]
    primary: bool = False
    needs_dose: bool = False


ANTI = "test_anti"
HYPOTHESES: dict[str, Hypothesis] = {
    "R1-H1": Hypothesis("at dose 0%, planted - kd > 0 and planted_all - kd > 0 on test_anti",
                        "r1-nl00", (Part("planted", "kd", ANTI), Part("planted_all", "kd", ANTI)),
                        primary=True),
    "R1-H2": Hypothesis("at dose 0%, leaf - kd > 0 on test_anti", "r1-nl00",
                        (Part("leaf", "kd", ANTI),), primary=True),
    "R1-H3": Hypothesis("dose-response: (X - kd) at 0% minus (X - kd) at 15% > 0 on test_anti, "
                        "X = leaf, planted, planted_all", "r1-nl00 vs r1-nl15",
                        tuple(Across(x, "kd", ("r1-nl00", ANTI), ("r1-nl15", ANTI))
                              for x in ("leaf", "planted", "planted_all")), needs_dose=True),
    "R1-H4": Hypothesis("at dose 0%, leaf - extra_kd_random > 0 on test_anti", "r1-nl00",
                        (Part("leaf", "extra_kd_random", ANTI),)),
    "R1-H5": Hypothesis("at dose 0%, leaf - kd < 0 on the share of swapped items whose answer "
                        "follows the distractor", "r1-nl00",
                        (Part("leaf", "kd", "reliance_follow", "<"),)),
    "R2-H1": Hypothesis("on each shifted split, planted - kd > 0 and leaf - kd > 0", "r2",
                        (Part("planted", "kd", EACH_SHIFTED), Part("leaf", "kd", EACH_SHIFTED)),
                        primary=True),
    "R2-H2": Hypothesis("on each shifted split, (leaf - kd) there minus (leaf - kd) on test_anti "
                        "> 0", "r2", (Across("leaf", "kd", ("r2", EACH_SHIFTED), ("r2", ANTI)),)),
    "R2-H3": Hypothesis("on each shifted split, leaf - extra_kd_random > 0", "r2",
                        (Part("leaf", "extra_kd_random", EACH_SHIFTED),)),
}

#: Reported beside the verdicts without a hypothesis (docs/study2.md), within each run, on
#: every split of the run.
REPORTED: tuple[tuple[str, str], ...] = (("unverified", "leaf"), ("leaf", "extra_kd_hard"))

Items = Callable[[str, str], Mapping[str, float] | None]


def _runs_of(h: Hypothesis) -> list[str]:
    names = {p.first[0] for p in h.parts if isinstance(p, Across)} | \
        {p.second[0] for p in h.parts if isinstance(p, Across)}
    return sorted(names) if names else [h.run]


def with_detectable(cell: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cell with ``detectable`` (:func:`leaf.intervals.detectable_difference` of its
    half-width) when it has an interval and does not carry one already."""
    if not cell or "detectable" in cell and cell["detectable"] is not None:
        return cell
    lo, hi = cell.get("lo"), cell.get("hi")
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return {**cell, "detectable": None}
    return {**cell, "detectable": detectable_difference((hi - lo) / 2)}


def restrict_seeds(results: dict[str, Any], keep: tuple[int, ...]) -> dict[str, Any]:
    """``results`` seen through the seeds in ``keep`` only: its seeds, their data replicates
    (with those replicates' counterfactual counts and signal figures) and per-seed
    counterfactual rows (the members of other seeds are simply never looked up).
    The stored ``differences`` (summarised over every seed) are dropped when a seed goes."""
    seeds = list(results.get("seeds") or [])
    idx = [i for i, s in enumerate(seeds) if s in keep]
    if len(idx) == len(seeds):
        return results
    reps = results.get("replicates") or []

    def pick(xs):
        return [xs[i] for i in idx] if isinstance(xs, list) and len(xs) == len(seeds) else xs

    rows = [{**r, "counterfactual_rows": pick(r["counterfactual_rows"])}
            if "counterfactual_rows" in r else r for r in results.get("rows") or []]
    out = {**results, "seeds": [seeds[i] for i in idx], "replicates": pick(reps),
           "rows": rows, "differences": []}
    if isinstance(reps, list) and len(reps) == len(seeds) and "counts" in results:
        keep_keys = set(out["replicates"])
        out["counts"] = {k: c for k, c in results["counts"].items() if k in keep_keys}
    return out


def has_added_seeds(results: dict[str, Any]) -> bool:
    """Whether the run holds the P rule's seeds 5-7 besides seeds 0-4."""
    return set(STUDY_SEEDS + P_ADDED_SEEDS) <= set(results.get("seeds") or [])


def within_read(results: dict[str, Any], part: Part, items: Items | None = None,
                primary: bool = False) -> tuple[dict[str, Any], str | None]:
    """A within-run part as the verdict rule reads it: over seeds 0-4; for a primary part whose
    detectable difference is above 0.03 there, over seeds 0-7 when the run has them (the result
    then says so in ``seeds_read`` and ``p_rule``). Returns the part and the P-rule flag still
    open (None when there is none or the added seeds were read)."""
    got = within(restrict_seeds(results, STUDY_SEEDS), part, items)
    got["seeds_read"] = [s for s in results.get("seeds") or [] if s in STUDY_SEEDS]
    flag = p_rule(got) if primary else None
    if flag and has_added_seeds(results):
        det = got["cell"]["detectable"]
        got = within(restrict_seeds(results, STUDY_SEEDS + P_ADDED_SEEDS), part, items)
        got["seeds_read"] = list(STUDY_SEEDS + P_ADDED_SEEDS)
        got["p_rule"] = (f"read over seeds 0-7: its detectable difference over seeds 0-4 was "
                         f"{det:.3f} > {P_DETECTABLE} (P rule)")
        flag = None
    return got, flag


def within(results: dict[str, Any], part: Part, items: Items | None = None) -> dict[str, Any]:
    """One within-run part: :func:`leaf.testbed.study.compare`, paired by seed and test item
    when per-item scores are given; without them an ``x - kd`` accuracy difference is read as
    ``results["differences"]`` stored it (paired the same way when the run was summarised)."""
    stored = _stored(results, part) if items is None else None
    out = part_result(part, stored) if stored is not None else compare(results, part, items)
    out["cell"] = with_detectable(out["cell"])
    return out


def _stored(results: dict[str, Any], part: Part) -> dict[str, Any] | None:
    for d in results.get("differences") or []:
        if d.get("key") == part.a and d.get("baseline") == part.b \
                and part.measure in (d.get("cells") or {}):
            return d
    return None


def seed_differences(results: dict[str, Any], a: str, b: str, split: str) -> dict[int, float]:
    """Seed -> ``a - b`` accuracy on ``split`` (the seed's paired mean difference over its
    items); a seed where ``a`` or ``b`` adds counterfactual rows but trained on none is left
    out, as within a run."""
    empty = seeds_without_counterfactuals(results, a, b)
    ma, mb = seed_members(results, a), seed_members(results, b)
    models = results.get("models") or {}
    out = {}
    for s in results["seeds"]:
        x = (models.get(ma[s]) or {}).get(split, {}).get("accuracy")
        y = (models.get(mb[s]) or {}).get(split, {}).get("accuracy")
        if s not in empty and x is not None and y is not None:
            out[s] = x - y
    return out


def across(first: dict[str, Any], second: dict[str, Any], part: Across,
           split1: str | None = None, split2: str | None = None) -> dict[str, Any]:
    """A difference of differences: per seed present in both, ``(a - b)`` on the first minus
    ``(a - b)`` on the second; 95% Student-t interval over those seeds."""
    s1 = split1 or part.first[1]
    s2 = split2 or part.second[1]
    d1 = seed_differences(restrict_seeds(first, STUDY_SEEDS), part.a, part.b, s1)
    d2 = seed_differences(restrict_seeds(second, STUDY_SEEDS), part.a, part.b, s2)
    seeds = sorted(set(d1) & set(d2))
    diffs = [d1[s] - d2[s] for s in seeds]
    cell: dict[str, Any] | None = None
    if len(diffs) >= 2:
        mean, lo, hi = t_interval(diffs)
        cell = {"mean": mean, "lo": lo, "hi": hi, "values": diffs, "seeds": seeds,
                "interval": "t over seeds (difference of paired differences)"}
    elif diffs:
        cell = {"mean": diffs[0], "lo": math.nan, "hi": math.nan, "values": diffs,
                "seeds": seeds, "interval": "one seed: no interval"}
    cell = with_detectable(cell)
    return {"a": part.a, "b": part.b, "first": [part.first[0], s1], "second": [part.second[0], s2],
            "measure": f"({part.first[0]} {s1}) - ({part.second[0]} {s2})",
            "predicted": part.predicted, "cell": cell, "pairs": len(diffs),
            "first_mean": sum(d1[s] for s in seeds) / len(seeds) if seeds else None,
            "second_mean": sum(d2[s] for s in seeds) / len(seeds) if seeds else None,
            "verdict": word(cell, part.predicted)}


def kept_signal(results: dict[str, Any], set_name: str, key: str = "cf_kl_row") -> float | None:
    """A counterfactual set's signal figure ``key`` (``cf_kl_row``: the kept counterfactuals'
    pre-KD KL per row), averaged over the data replicates that measured it."""
    values = [(((c.get("sets") or {}).get(set_name) or {}).get("signal") or {}).get(key)
              for c in (results.get("counts") or {}).values()]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def leaf_set(results: dict[str, Any]) -> str | None:
    """The counterfactual set the ``leaf`` variant trains on (its first)."""
    sets = ((results.get("variants") or {}).get("leaf") or {}).get("sets") or []
    return sets[0] if sets else None


def dose_precondition(high: dict[str, Any], low: dict[str, Any]) -> dict[str, Any]:
    """R1-H3's precondition: LeaF's kept counterfactuals carry more pre-KD KL per row at dose
    0% (``high``) than at 15% (``low``)."""
    name = leaf_set(high) or leaf_set(low)
    k0 = kept_signal(high, name) if name else None
    k15 = kept_signal(low, name) if name else None
    met = k0 is not None and k15 is not None and k0 > k15
    if k0 is None or k15 is None:
        reason = f"no signal figures for set {name} at both doses"
    else:
        reason = (f"kept counterfactuals' pre-KD KL per row ({name}): {k0:.3f} at 0% vs "
                  f"{k15:.3f} at 15%" + ("" if met else ": the dose did not dose"))
    return {"set": name, "kl_0": k0, "kl_15": k15, "met": met, "reason": reason}


def teacher_accuracy(results: dict[str, Any], split: str) -> float | None:
    for row in results.get("rows") or []:
        if row.get("key") == "teacher":
            return ((row.get("cells") or {}).get(split) or {}).get("mean")
    return None


def shifted_splits(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each shifted split: the teacher's accuracy and whether R2's verdicts read it (present,
    and the teacher at or above :data:`TEACHER_FLOOR`)."""
    out = {}
    for split in SHIFTED:
        acc = teacher_accuracy(results, split) if split in results.get("splits", []) else None
        if split not in results.get("splits", []):
            kept, why = False, "not in the run"
        elif acc is None:
            kept, why = False, "teacher not evaluated on it"
        elif acc < TEACHER_FLOOR:
            kept, why = False, f"teacher accuracy {acc:.3f} < {TEACHER_FLOOR}: left out"
        else:
            kept, why = True, f"teacher accuracy {acc:.3f}"
        out[split] = {"teacher": acc, "kept": kept, "reason": why}
    return out


def _expand(h: Hypothesis, kept: list[str]) -> list[tuple[Part | Across, str | None]]:
    """The parts with :data:`EACH_SHIFTED` replaced by each kept split (and that split)."""
    out: list[tuple[Part | Across, str | None]] = []
    for p in h.parts:
        shifted = (p.measure if isinstance(p, Part) else p.first[1]) == EACH_SHIFTED
        if not shifted:
            out.append((p, None))
            continue
        for split in kept:
            if isinstance(p, Part):
                out.append((Part(p.a, p.b, split, p.predicted), split))
            else:
                out.append((Across(p.a, p.b, (p.first[0], split), p.second, p.predicted),
                            split))
    return out


def p_rule(part: dict[str, Any]) -> str | None:
    """The P-rule flag of a primary part read over seeds 0-4: its detectable difference above
    0.03 after 5 seeds (:func:`within_read` reads the part over seeds 0-7 once they ran)."""
    det = (part.get("cell") or {}).get("detectable")
    if det is None or part.get("pairs", 0) < P_SEEDS or det <= P_DETECTABLE:
        return None
    return (f"P rule: detectable difference {det:.3f} > {P_DETECTABLE} after {part['pairs']} "
            f"seeds; docs/study2.md adds seeds 5, 6 and 7 to this cell before its verdict is "
            f"read (they have not run yet)")


def _missing_variants(results: dict[str, Any], p: Part | Across) -> list[str]:
    return [v for v in (p.a, p.b) if v not in (results.get("variants") or {})]


def hypothesis_verdict(hid: str, runs: Mapping[str, dict[str, Any]],
                       items: Mapping[str, Items] | None = None,
                       signal_passed: bool | None = None) -> dict[str, Any]:
    """One hypothesis: its parts with cells, its verdict, notes and P-rule flags."""
    h = HYPOTHESES[hid]
    out: dict[str, Any] = {"id": hid, "text": h.text, "run": h.run, "primary": h.primary,
                           "parts": [], "notes": [], "flags": [], "p_read": [], "reason": None}
    missing = [r for r in _runs_of(h) if r not in runs]
    if missing:
        out.update(verdict=NOT_RUN, reason="no results for " + ", ".join(missing))
        return out
    if h.needs_dose:
        pre = dose_precondition(restrict_seeds(runs["r1-nl00"], STUDY_SEEDS),
                                restrict_seeds(runs["r1-nl15"], STUDY_SEEDS))
        out["precondition"] = pre
        if not pre["met"]:
            out.update(verdict=NOT_TESTED, reason=pre["reason"])
            return out
    kept = None
    if h.run == "r2":
        split_info = shifted_splits(runs["r2"])
        kept = [s for s, i in split_info.items() if i["kept"]]
        out["splits"] = split_info
        if not kept:
            out.update(verdict=NOT_TESTED, reason="no shifted split kept: " + "; ".join(
                f"{s} {i['reason']}" for s, i in split_info.items()))
            return out
    unmeasured = []
    for p, split in _expand(h, kept or []):
        if isinstance(p, Across):
            first, second = runs[p.first[0]], runs[p.second[0]]
            absent = _missing_variants(first, p) + _missing_variants(second, p)
            got, flag = (None if absent else across(first, second, p)), None  # no P rule
        else:
            res = runs[h.run]
            absent = _missing_variants(res, p)
            got, flag = (None, None) if absent else within_read(
                res, p, (items or {}).get(h.run), h.primary)
        if got is None:
            unmeasured.append(f"{p.a} - {p.b}: variant {', '.join(sorted(set(absent)))} "
                              "not in the run")
            continue
        got["split"] = split
        if got["cell"] is None:
            unmeasured.append(f"{p.a} - {p.b} on {got['measure']}: not measured")
        out["parts"].append(got)
        if flag:
            out["flags"].append(f"{p.a} - {p.b} on {got['measure']}: {flag}")
        if got.get("p_rule"):
            out["p_read"].append(f"{p.a} - {p.b} on {got['measure']}: {got['p_rule']}")
    if unmeasured:
        out.update(verdict=NOT_TESTED, reason="; ".join(unmeasured))
    else:
        out["verdict"] = combine([p["verdict"] for p in out["parts"]])
    if h.run.startswith("r1") and signal_passed is False and any(
            "leaf" in (p.a, p.b) for p in h.parts):
        out["notes"].append(SIGNAL_NOTE)
    return out


def falsification(h1: dict[str, Any], signal_passed: bool | None) -> dict[str, Any]:
    """docs/study2.md's falsification clause, read off R1-H1's parts (``h1``, from
    :func:`hypothesis_verdict`: the same cells, read the same way): with the pilot's signal check
    passed, at dose 0% ``planted - kd`` or ``planted_all - kd`` on test_anti with a mean at or
    below 0 and an upper 95% end below +0.03; with it failed, only ``planted_all`` is read."""
    if h1["verdict"] == NOT_RUN:
        return {"evaluated": False, "fired": False, "reason": "r1-nl00 not run yet", "arms": []}
    if signal_passed is None:
        return {"evaluated": False, "fired": False, "arms": [],
                "reason": "no pilot decision (pilot/decision.json): the signal check is unknown"}
    arms = ("planted", "planted_all") if signal_passed else ("planted_all",)
    parts = {p["a"]: p for p in h1["parts"]}
    read = []
    for arm in arms:
        if arm not in parts:
            read.append({"arm": arm, "cell": None, "fires": False, "why": "not in the run"})
            continue
        c = parts[arm]["cell"]
        hi = None if not c or c.get("hi") is None or math.isnan(c["hi"]) else c["hi"]
        fires = c is not None and hi is not None and c["mean"] <= 0 and hi < FALSIFY_UPPER
        read.append({"arm": arm, "cell": c, "fires": fires,
                     "why": "no interval" if c is not None and hi is None else None})
    fired = any(a["fires"] for a in read)
    return {"evaluated": True, "fired": fired, "arms": read, "signal_check_passed": signal_passed,
            "reason": None}


def verdicts2(runs: Mapping[str, dict[str, Any]], pilot: Mapping[str, Any] | None = None,
              items: Mapping[str, Items] | None = None) -> dict[str, Any]:
    """Every hypothesis of docs/study2.md, the falsification clause and the reported-only
    comparisons, from ``runs`` (run name -> results.json) and the pilot's decision
    (``pilot/decision.json``: ``signal_ratio``, ``signal_check_passed``, ``train_rows``,
    ``epochs``; None when the pilot has not decided). ``items``: run name ->
    ``items(member, split)`` per-item scores, for the item-paired intervals."""
    runs = {k: v for k, v in runs.items() if v is not None}
    passed = None if not pilot else pilot.get("signal_check_passed")
    hypotheses = {hid: hypothesis_verdict(hid, runs, items, passed) for hid in HYPOTHESES}
    out: dict[str, Any] = {
        "present": [r for r in RUNS if r in runs], "missing": [r for r in RUNS if r not in runs],
        "signal_check_passed": passed, "hypotheses": hypotheses,
        "falsification": falsification(hypotheses["R1-H1"], passed),
        "reported": {},
    }
    for name, res in runs.items():
        got = [within_read(res, Part(a, b, split), (items or {}).get(name))[0]
               for a, b in REPORTED
               if not _missing_variants(res, Part(a, b, ANTI)) for split in res["splits"]]
        out["reported"][name] = got
    return out

