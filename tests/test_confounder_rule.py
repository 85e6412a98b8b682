"""One confounder rule: prune, the report and the testbed metrics flag the same units and spans.

The same scores rows go through ``leaf prune`` (``sample_rows``), the report's data builder
(``build_report_data``) and the detection metrics (``flagged_from_scores``). The rows cover
the cases where separate copies of the rule used to disagree: differences that are all equal
(no spread), whitespace units between flagged units (one span, not several), a whitespace
unit with the lowest difference (never a candidate), and an ordinary row.
"""

from __future__ import annotations

import re

import pytest

from leaf.detect.counterfactuals import PruneOptions, sample_rows
from leaf.detect.scores_file import scored_text
from leaf.detect.spans import blank_mask, cut
from leaf.report.collect import build_report_data
from leaf.testbed.metrics import flagged_from_scores
from test_spans import words

FLAT = "a = 3 ; query a ?"
BRIDGED = "b = 7 ; rumor : 15 ; query b ?"
BLANK_LOW = "x = 2 ; noise ! ; query x ?"
ORDINARY = "Sam has 5 apples. A hint: the answer is 9. How many?"
RESPONSE = "5 + 9 = 14\nanswer 14"


def byte_units(text):
    """Byte-level-tokenizer style units: each word carries the whitespace before it."""
    return [[m.start(), m.end()] for m in re.finditer(r"\s*\S+", text)]


def diffs(text, units, low, blank=0.9, default=1.0):
    """``low[word]`` for the listed words, ``blank`` for whitespace units, else ``default``."""
    out = []
    for s, e in units:
        piece = text[s:e]
        out.append(blank if not piece.strip() else low.get(piece.strip(), default))
    return out


def row(sid, text, units, diff, level="instruction", segment=0, prefix_end=None):
    return {"id": sid, "level": level, "segment": segment, "field": level,
            "prefix_end": prefix_end, "units": units, "diff": diff,
            "teacher": [0.5] * len(units), "student": [0.5] * len(units), "unit_kind": "word"}


def blank_low_diff():
    units = words(BLANK_LOW)
    d = diffs(BLANK_LOW, units, {"noise": 0.06})
    d[units.index([BLANK_LOW.index("noise") - 1, BLANK_LOW.index("noise")])] = 0.0  # the space
    return units, d


SAMPLES = {
    "flat": {"id": "flat", "instruction": FLAT, "response": "3"},
    "bridged": {"id": "bridged", "instruction": BRIDGED, "response": "7"},
    "blank": {"id": "blank", "instruction": BLANK_LOW, "response": "2"},
    "ordinary": {"id": "ordinary", "instruction": ORDINARY, "response": RESPONSE},
}
_ord_units = byte_units(ORDINARY)
SCORES = [
    # min-max normalisation maps all-equal differences to zeros: nothing may be flagged
    row("flat", FLAT, words(FLAT), [0.0] * len(words(FLAT))),
    row("bridged", BRIDGED, words(BRIDGED),
        diffs(BRIDGED, words(BRIDGED), {"rumor": 0.02, ":": 0.05, "15": 0.0})),
    row("blank", BLANK_LOW, *blank_low_diff()),
    row("ordinary", ORDINARY, _ord_units,
        diffs(ORDINARY, _ord_units, {"hint:": 0.03, "the": 0.5, "answer": 0.08, "is": 0.04,
                                     "9.": 0.0, "A": 0.3})),
    row("ordinary", RESPONSE[:10], words(RESPONSE[:10]),
        diffs(RESPONSE[:10], words(RESPONSE[:10]), {"9": 0.0}),
        level="response", segment=1, prefix_end=10),
]
# What the paper's rule flags at tau = 0.10, as text: the whole point of agreeing.
EXPECTED_FIXED = {
    ("flat", "instruction"): [],
    ("bridged", "instruction"): ["rumor : 15"],
    ("blank", "instruction"): ["noise"],
    ("ordinary", "instruction"): [" hint:", " answer is 9."],
}
MODES = [("fixed", {"tau": 0.10}), ("quantile", {"quantile": 0.2})]


def text_of(score):
    return scored_text(SAMPLES[score["id"]], score)


def key(score):
    return score["id"], score["level"]


def non_blank_units_in(text, units, spans):
    """Indices of the non-whitespace units that lie inside ``spans``."""
    blank = blank_mask(text, units)
    return sorted(i for i, (s, e) in enumerate(units)
                  if not blank[i] and any(a <= s and e <= b for a, b in spans))


def pruned_by_prune(mode, kw):
    """Per scores row, the spans ``leaf prune`` removes (one counterfactual per span)."""
    opts = PruneOptions(threshold_mode=mode, strategy="span", **kw)
    out = {}
    for score in SCORES:
        rows = sample_rows(SAMPLES[score["id"]], [score], opts)
        out[key(score)] = [tuple(p) for r in rows if r["kind"] == "counterfactual"
                           for p in r["pruned"]]
    return out


def report_views(scores, cfs, **flags):
    data = build_report_data(scores, cfs, list(SAMPLES.values()), **flags)
    return {(s["id"], v["level"]): v for s in data["samples"] for v in s["views"]}


@pytest.mark.parametrize("mode,kw", MODES)
def test_prune_report_and_metrics_flag_the_same_units_and_spans(mode, kw):
    pruned = pruned_by_prune(mode, kw)
    opts = PruneOptions(threshold_mode=mode, strategy="span", **kw)
    cfs = [r for s in SAMPLES.values()
           for r in sample_rows(s, [x for x in SCORES if x["id"] == s["id"]], opts)]
    # the report as leaf report builds it from prune's output, and with the rule given as flags
    reports = [report_views(SCORES, (), threshold_mode=mode, **kw)]
    if mode == "fixed":  # one common cut-off in the rows reads as the fixed tau
        reports.append(report_views(SCORES, cfs))
    for score in SCORES:
        text, units = text_of(score), score["units"]
        prune_units = non_blank_units_in(text, units, pruned[key(score)])
        for views in reports:
            view = views[key(score)]
            assert (view["nc"], view["runs"]) == (len(prune_units), len(pruned[key(score)])), \
                key(score)
            assert view["c"] == prune_units, key(score)
    # the detection metrics look at instructions only
    flagged = flagged_from_scores(SCORES, SAMPLES, mode, **kw)
    for score in SCORES:
        if score["level"] != "instruction":
            continue
        text, units = text_of(score), score["units"]
        spans = [tuple(sp) for sp in flagged[score["id"]]]
        assert non_blank_units_in(text, units, spans) == \
            non_blank_units_in(text, units, pruned[key(score)]), key(score)
        # prune removes exactly these spans, after its whitespace widening
        assert [cut(text, sp) for sp in spans] == pruned[key(score)], key(score)
    if mode == "fixed":
        got = {(sid, "instruction"): [SAMPLES[sid]["instruction"][a:b] for a, b in spans]
               for sid, spans in flagged.items()}
        assert got == EXPECTED_FIXED


def test_report_counts_agree_with_prune_on_a_flat_row():
    """The case that used to differ most: prune flags nothing, the report showed every unit."""
    flat = SCORES[0]
    view = report_views([flat], (), tau=0.10)[key(flat)]
    assert (view["nc"], view["runs"], view["c"]) == (0, 0, [])
    assert view["cut"] is None and "all equal" in view["why"]
    assert sample_rows(SAMPLES["flat"], [flat], PruneOptions()) == sample_rows(
        SAMPLES["flat"], [], PruneOptions())
