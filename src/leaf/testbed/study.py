"""Verdicts of the testbed study (docs/study.md) read off one run's ``results.json``.

Every comparison is a difference between two variants paired by seed
(:func:`leaf.intervals.paired_difference`), on accuracy, on detection span recall (paired
by data replicate) or on the share of attention paid to the distractor. The rule that turns an
interval into a word is fixed here and in docs/study.md:

- "A > B" (or "A < B"): supported when the 95% interval excludes 0 on the predicted side,
  contradicted when it excludes 0 on the other side, inconclusive otherwise;
- "A >= B": contradicted only when the interval lies below 0, supported when above, else
  "not contradicted";
- several parts: supported when all are, contradicted when any is, else inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from leaf.intervals import paired_difference

SUPPORTED, CONTRADICTED = "supported", "contradicted"
INCONCLUSIVE, NOT_CONTRADICTED = "inconclusive", "not contradicted"


@dataclass(frozen=True)
class Part:
    """One comparison: ``a`` minus ``b`` on ``measure`` (a split name, ``span_recall`` or
    ``attention``), predicted ``>``, ``<`` or ``>=``."""

    a: str
    b: str
    measure: str
    predicted: str = ">"


HYPOTHESES: dict[str, tuple[str, list[Part]]] = {
    "H1": ("gradient LeaF beats KD w/o mask on the anti-correlated and the clean split",
           [Part("leaf", "kd", "test_anti"), Part("leaf", "kd", "test_clean")]),
    "H2": ("gradient > PPL > random, in detection and in trained accuracy (anti-correlated)",
           [Part("gradient", "ppl", "span_recall"), Part("ppl", "random", "span_recall"),
            Part("leaf", "ppl", "test_anti"), Part("ppl", "random", "test_anti")]),
    "H3": ("span pruning is at least as good as collective pruning (anti-correlated)",
           [Part("leaf", "collective", "test_anti", ">=")]),
    "H4": ("LeaF lowers the attention the student pays to the distractor",
           [Part("leaf", "kd", "attention", "<")]),
}
CONTROLS: list[tuple[str, Part]] = [
    ("augmentation control: LeaF minus extra KD rows", Part("leaf", "extra_kd", "test_anti")),
    ("augmentation control: LeaF minus extra KD rows", Part("leaf", "extra_kd", "test_clean")),
    ("oracle: planted removal minus KD", Part("planted", "kd", "test_anti")),
    ("oracle: planted removal minus KD", Part("planted", "kd", "test_clean")),
    ("mixing: paired minus uniform", Part("leaf", "leaf_uniform", "test_anti")),
    ("mixing: paired minus uniform", Part("leaf", "leaf_uniform", "test_clean")),
]


def word(cell: dict[str, Any] | None, predicted: str) -> str:
    """The verdict of one paired difference under the rule of the module docstring."""
    if not cell or cell.get("lo") is None or math.isnan(cell["lo"]):
        return INCONCLUSIVE
    above, below = cell["lo"] > 0, cell["hi"] < 0
    if predicted == ">=":
        return CONTRADICTED if below else (SUPPORTED if above else NOT_CONTRADICTED)
    if predicted == "<":
        above, below = below, above
    return SUPPORTED if above else (CONTRADICTED if below else INCONCLUSIVE)


def combine(words: list[str]) -> str:
    if words and all(w == SUPPORTED for w in words):
        return SUPPORTED
    if CONTRADICTED in words:
        return CONTRADICTED
    if words and all(w in (SUPPORTED, NOT_CONTRADICTED) for w in words):
        return NOT_CONTRADICTED
    return INCONCLUSIVE


def _detection_values(results: dict[str, Any]):
    """``values(member, measure)`` reading a rule's per-replicate span recall; members are
    ``<rule>-s<seed>@<data key>`` as built by :func:`paired_difference`."""
    det = results.get("detection") or {}

    def get(member: str, measure: str):
        rule, rest = member.rsplit("-s", 1)
        dkey = rest.split("@", 1)[1]
        v = ((det.get(rule) or {}).get("replicates") or {}).get(dkey, {}).get(measure)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    return get


def _attention_values(results: dict[str, Any]):
    shares: dict[str, float] = {}
    for row in (results.get("attention") or {}).get("rows", []):
        for member, value in zip(row.get("members") or [], row["share"]["values"]):
            shares[member] = value

    def get(member: str, measure: str):
        return shares.get(member)

    return get


def _reliance_values(results: dict[str, Any], field: str = "follows_swap"):
    """``values(member, measure)``: a member's reliance ``field`` from the attention rows (the
    values line up with the members only when every member was measured)."""
    got: dict[str, float] = {}
    for row in (results.get("attention") or {}).get("rows", []):
        members = row.get("members") or []
        values = ((row.get("reliance") or {}).get(field) or {}).get("values") or []
        if len(values) == len(members):
            got.update(zip(members, values))

    def get(member: str, measure: str):
        return got.get(member)

    return get


def part_result(part: Part, d: dict[str, Any]) -> dict[str, Any]:
    """One part's outcome from its paired difference ``d`` (:func:`paired_difference`'s
    shape), with its verdict."""
    cell = d["cells"].get(part.measure)
    return {"a": part.a, "b": part.b, "measure": part.measure, "predicted": part.predicted,
            "cell": cell, "pairs": d["pairs"],
            "runs_without_counterfactuals": d["runs_without_counterfactuals"],
            "verdict": word(cell, part.predicted)}


def compare(results: dict[str, Any], part: Part, items: Any = None) -> dict[str, Any]:
    """The paired difference of one part, with its verdict; ``items(member, split)`` (test
    item id -> score) pairs an accuracy difference by test item too. Measures: a split's
    accuracy, ``span_recall`` (detection), ``attention`` (share on the distractor) and
    ``reliance_follow`` (share of swapped items whose answer follows the distractor)."""
    if part.measure == "span_recall":
        view = {**results, "splits": ["span_recall"], "variants": {}, "rows": []}
        d = paired_difference(view, part.a, part.b, _detection_values(results))
    elif part.measure in ("attention", "reliance_follow"):
        view = {**results, "splits": [part.measure]}
        values = _attention_values if part.measure == "attention" else _reliance_values
        d = paired_difference(view, part.a, part.b, values(results))
    else:
        d = paired_difference(results, part.a, part.b, items=items)
    return part_result(part, d)


def verdicts(results: dict[str, Any]) -> dict[str, Any]:
    """Every hypothesis of docs/study.md and every control, for one run."""
    out: dict[str, Any] = {"hypotheses": {}, "controls": []}
    known = set(results.get("variants") or {}) | set(results.get("detection") or {})
    for hid, (text, parts) in HYPOTHESES.items():
        done = [compare(results, p) for p in parts if {p.a, p.b} <= known]
        missing = len(parts) - len(done)
        verdict = combine([c["verdict"] for c in done]) if not missing else INCONCLUSIVE
        out["hypotheses"][hid] = {"text": text, "parts": done, "missing_parts": missing,
                                  "verdict": verdict}
    for text, part in CONTROLS:
        if {part.a, part.b} <= known:
            out["controls"].append({"text": text, **compare(results, part)})
    return out
