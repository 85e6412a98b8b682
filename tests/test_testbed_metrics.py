"""Detection metrics against planted spans."""

from __future__ import annotations

import math

import pytest

from leaf.testbed.metrics import (
    detection_quality,
    flagged_from_counterfactuals,
    flagged_from_scores,
    merge_spans,
    overlaps,
)
from leaf.testbed.tasks import make_split

TEXT = "a = 3 ; b = 7 ; c = 5 ; rumor : 15 ; query a + b + c ?"
RUMOR = TEXT.index("rumor")
NUM = TEXT.index("15")
SAMPLE = {"id": "x", "instruction": TEXT,
          "planted": {"misleading": [[NUM, NUM + 2]], "distractor": [[RUMOR, NUM + 4]]}}
CLEAN = {"id": "c", "instruction": "a = 3 ; b = 7 ; c = 5 ; query a + b + c ?",
         "planted": {"misleading": [], "distractor": []}}


def test_span_helpers():
    assert merge_spans([[5, 7], [0, 2], [2, 3], [6, 9], [4, 4]]) == [(0, 3), (5, 9)]
    assert overlaps([0, 2], [1, 5]) and not overlaps([0, 2], [2, 5])


def test_flagging_the_decoy_number_is_perfect():
    q = detection_quality([SAMPLE], {"x": [[NUM, NUM + 1], [NUM + 1, NUM + 2]]})
    assert q["span_recall"] == 1.0 and q["token_precision"] == 1.0
    assert q["n_samples"] == 1 and q["n_planted"] == 1 and q["n_flagged_chars"] == 2


def test_one_digit_of_the_decoy_counts_as_found():
    q = detection_quality([SAMPLE], {"x": [[NUM + 1, NUM + 2]]})
    assert q["span_recall"] == 1.0


def test_leading_space_of_a_byte_level_token_is_not_a_false_positive():
    # " rumor" (the token carries the space before the sentence) and " :" are inside.
    q = detection_quality([SAMPLE], {"x": [[RUMOR - 1, RUMOR + 5], [RUMOR + 5, RUMOR + 7]]})
    assert q["token_precision"] == 1.0
    assert q["span_recall"] == 0.0  # the sentence's words, but not its number


def test_flags_outside_the_sentence_lower_precision_and_miss():
    q = detection_quality([SAMPLE], {"x": [[0, 1], [NUM, NUM + 2]]})  # "a" and "15"
    assert q["token_precision"] == pytest.approx(2 / 3)
    q = detection_quality([SAMPLE], {"x": [[0, 5]]})  # "a = 3": 3 content chars, all outside
    assert q["token_precision"] == 0.0 and q["span_recall"] == 0.0


def test_micro_average_over_samples_and_clean_flags_count_against_precision():
    flagged = {"x": [[NUM, NUM + 2]], "c": [[0, 1]], "unscored": [[0, 1]]}
    q = detection_quality([SAMPLE, CLEAN], flagged)
    assert q["n_samples"] == 2 and q["n_planted"] == 1
    assert q["span_recall"] == 1.0 and q["token_precision"] == pytest.approx(2 / 3)
    # A scored sample with nothing flagged is a miss; with no flags at all precision is NaN.
    q = detection_quality([SAMPLE], {"x": []})
    assert q["span_recall"] == 0.0 and math.isnan(q["token_precision"])
    # Samples without an entry were not scored and do not count.
    assert detection_quality([SAMPLE], {})["n_samples"] == 0


def test_overlapping_flags_are_not_double_counted():
    q = detection_quality([SAMPLE], {"x": [[NUM, NUM + 2], [NUM, NUM + 2], [0, 1]]})
    assert q["n_flagged_chars"] == 3 and q["token_precision"] == pytest.approx(2 / 3)


def test_metrics_on_generated_samples_use_their_recorded_spans():
    rows = make_split("word_problem", "test_anti", 20, seed=1)
    exact = {r["id"]: r["planted"]["misleading"] for r in rows}
    q = detection_quality(rows, exact)
    assert q["span_recall"] == 1.0 and q["token_precision"] == 1.0
    whole = {r["id"]: r["planted"]["distractor"] for r in rows}
    assert detection_quality(rows, whole)["token_precision"] == 1.0
    first_word = {r["id"]: [[0, 3]] for r in rows}  # the subject's name
    assert detection_quality(rows, first_word) == {
        "span_recall": 0.0, "token_precision": 0.0, "n_samples": 20, "n_planted": 20,
        "n_flagged_chars": 60}


def test_flagged_from_scores_applies_the_rule():
    rows = [
        {"id": "x", "level": "instruction", "units": [[0, 1], [NUM, NUM + 1], [NUM + 1, NUM + 2]],
         "diff": [1.0, 0.0, 0.08]},
        {"id": "x", "level": "response", "units": [[0, 1]], "diff": [0.0]},
    ]
    samples = {"x": SAMPLE}
    # contiguous flagged units form one span, as leaf prune groups them
    assert flagged_from_scores(rows, samples, tau=0.10) == {"x": [[NUM, NUM + 2]]}
    assert flagged_from_scores(rows, samples, tau=0.05) == {"x": [[NUM, NUM + 1]]}
    flat = [dict(rows[0], diff=[0.4, 0.4, 0.4])]  # no spread: nothing stands out
    assert flagged_from_scores(flat, samples, tau=0.5) == {"x": []}
    with pytest.raises(ValueError, match="no such sample"):
        flagged_from_scores(rows, {})


def test_flagged_from_counterfactuals_unions_pruned_spans_per_origin():
    rows = [
        {"id": "x", "origin_id": "x", "kind": "original", "level": "instruction", "pruned": []},
        {"id": "x#i0", "origin_id": "x", "kind": "counterfactual", "level": "instruction",
         "pruned": [[NUM, NUM + 2]], "verified": True},
        {"id": "x#i1", "origin_id": "x", "kind": "counterfactual", "level": "instruction",
         "pruned": [[0, 1]], "verified": False},
        {"id": "x#r1.0", "origin_id": "x", "kind": "counterfactual", "level": "response",
         "pruned": [[0, 3]], "verified": True},
        {"id": "y", "origin_id": "y", "kind": "original", "level": "instruction", "pruned": []},
    ]
    assert flagged_from_counterfactuals(rows) == {"x": [[NUM, NUM + 2], [0, 1]], "y": []}
    assert flagged_from_counterfactuals(rows, verified_only=True) == {"x": [[NUM, NUM + 2]],
                                                                      "y": []}
    rows[1] |= {"masking": "gradient", "strategy": "span"}
    rows[2] |= {"masking": "random", "strategy": "span"}
    assert flagged_from_counterfactuals(rows, masking="random") == {"x": [[0, 1]], "y": []}
    assert flagged_from_counterfactuals(rows, strategy="collective") == {"x": [], "y": []}
