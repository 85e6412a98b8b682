"""The testbed's numberless rows are, character for character, what ``leaf prune`` leaves.

The shipped models are pre-trained on numberless rows so that pruned inputs are in
distribution; if the two texts differed (``rumor :  ;`` against ``rumor : ;``) verification
would throw true removals away. Each check draws the same problem twice (same seed), once with
a distractor number and once numberless, prunes the planted number of the first through the
pruner's own path (a scores row flagging just the number, then
:func:`leaf.detect.counterfactuals.counterfactuals_for_row`) and compares.
"""

from __future__ import annotations

import random

import pytest

from leaf.detect.counterfactuals import PruneOptions, counterfactuals_for_row
from leaf.detect.units import word_spans
from leaf.testbed.tasks import FAMILIES, make_sample, pretraining_mix

SEEDS = range(150)
CARRYING = ("agree", "disagree", "random")


def _char_spans(text: str) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(len(text))]


UNITS = {"words": word_spans, "characters": _char_spans}


def _pair(family: str, seed: int, variant: str) -> tuple[dict, dict]:
    """The same problem with a distractor number (``variant``) and numberless."""
    fam = FAMILIES[family]
    full = make_sample(fam, random.Random(seed), variant, f"{family}-{seed}", "test")
    numberless = make_sample(fam, random.Random(seed), "numberless", f"{family}-{seed}", "test")
    assert full["response"] == numberless["response"]  # the same problem was drawn
    return full, numberless


def _prune_number(sample: dict, units_of) -> dict:
    """The counterfactual ``leaf prune`` makes when detection flags exactly the planted number."""
    text = sample["instruction"]
    [(ms, me)] = sample["planted"]["misleading"]
    units = units_of(text)
    diff = [0.0 if ms <= s and e <= me else 1.0 for s, e in units]
    assert 0.0 in diff and 1.0 in diff
    score = {"id": sample["id"], "level": "instruction", "segment": 0, "prefix_end": None,
             "units": [list(u) for u in units], "diff": diff}
    [row] = counterfactuals_for_row(sample, score, PruneOptions())
    return row


@pytest.mark.parametrize("units", sorted(UNITS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_numberless_row_is_what_pruning_the_planted_number_leaves(family, units):
    for seed in SEEDS:
        for variant in CARRYING:
            full, numberless = _pair(family, seed, variant)
            pruned = _prune_number(full, UNITS[units])
            assert numberless["instruction"] == pruned["instruction"], (seed, variant)
            assert "  " not in numberless["instruction"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_numberless_planted_spans_follow_the_cut(family):
    for seed in SEEDS:
        full, numberless = _pair(family, seed, "disagree")
        [(cs, ce)] = _prune_number(full, word_spans)["pruned"]
        text, before = numberless["instruction"], full["instruction"]
        [(ms, me)] = full["planted"]["misleading"]
        [(ds, de)] = full["planted"]["distractor"]
        assert cs <= ms and me <= ce and ds < cs and ce < de  # the cut stays in the sentence
        assert numberless["planted"]["misleading"] == []
        [(ns, ne)] = numberless["planted"]["distractor"]
        # What is left of the sentence, and everything around it unchanged.
        assert (ns, ne) == (ds, de - (ce - cs))
        assert text[ns:ne] == before[ds:cs] + before[ce:de]
        assert text[:ns] == before[:ds] and text[ne:] == before[de:]
        assert text[ns:ne] == text[ns:ne].strip() and text[ne - 1] in ";."
        assert numberless["distractor_value"] is None
        assert numberless["distractor_agrees"] is None


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pretraining_numberless_rows_have_the_pruned_form(family):
    rows = [r for r in pretraining_mix(family, 400, seed=3, distractor="biased")
            if r["variant"] == "numberless"]
    assert len(rows) > 30
    for r in rows:
        [(s, e)] = r["planted"]["distractor"]
        sentence = r["instruction"][s:e]
        assert "  " not in r["instruction"]
        assert sentence in ("rumor : ;",) or (sentence.count(" has ") == 1
                                              and not any(c.isdigit() for c in sentence))
