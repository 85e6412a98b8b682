"""Distractor-shift splits (moved, two, in-topic distractors), the varied pre-training mix and
the teacher pre-trained on it (``testbed:word_problem/teacher_varied``)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from leaf.errors import LeafError
from leaf.evaluate.reliance import reliance_items
from leaf.models import resolve_model_name
from leaf.testbed.assets import calibration, extra_roles, load, model_dir
from leaf.testbed.evaluate import greedy_accuracy
from leaf.testbed.tasks import (
    ALL_SPLITS,
    FAMILIES,
    SHIFT_SPLITS,
    SPLITS,
    Rendered,
    make_split,
    make_splits,
    pretraining_mix,
    without_misleading,
)

WORDY = ("word_problem", "multi_step")  # the families that express every shift split

# sha256 (first 16 hex digits) of the original draws, measured before layouts existed:
# make_split(f, s, 300, seed=3, bias=0.9), the train split with clean_frac=0.2, and
# pretraining_mix(f, 300, 5, d, bias=0.99, numberless_frac=0.03).
BEFORE = {
    "digit_sum": ["3d2bc5bdebaaf666", "bab1e323e4a472d0", "51d82e5a6bce3d7a", "92441bfb99707701",
                  "6fa9b252f5ace836", "984eb91a76129f75", "ecad2567f3f11f2d"],
    "multi_step": ["dd47a652bd3ba8bd", "30600f48703b1773", "71e6be9e60cade52", "f7d7cb7bc054cf8f",
                   "650e258ab493ae3a", "a7cc921a172ae082", "997d0d2f3d7e361d"],
    "word_problem": ["0e54b6ad1775c793", "c8e14be07900d441", "5653f72578bb8008",
                     "9fe0ce2d3f6cd142", "a2e66d1b3a4dbdfb", "fa3c4a7d2286c165",
                     "3b893edd1e42864a"],
}


def _digest(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_original_splits_and_mixes_are_byte_identical_to_before(family):
    draws = [make_split(family, s, 300, seed=3, bias=0.9) for s in SPLITS]
    draws.append(make_split(family, "train", 300, seed=3, bias=0.9, clean_frac=0.2))
    draws += [pretraining_mix(family, 300, 5, d, bias=0.99, numberless_frac=0.03)
              for d in ("random", "biased")]
    assert [_digest(rows) for rows in draws] == BEFORE[family]
    # asking for the shift splits too changes none of the others
    shifts = {s: 20 for s, layout in SHIFT_SPLITS.items() if layout in FAMILIES[family].layouts}
    alone = make_splits(family, 4, 0.9, {"train": 50, "test_anti": 20})
    both = make_splits(family, 4, 0.9, {"train": 50, "test_anti": 20, **shifts})
    assert set(both) == set(alone) | set(shifts)
    assert all(both[s] == alone[s] for s in alone)


@pytest.fixture(scope="module", params=[(f, s) for f in WORDY for s in SHIFT_SPLITS])
def shift(request):
    family, split = request.param
    return family, split, make_split(family, split, 150, seed=2)


def test_every_distractor_disagrees_and_its_spans_point_at_its_number(shift):
    family, split, rows = shift
    layout = SHIFT_SPLITS[split]
    count = 2 if layout == "two" else 1
    assert make_split(family, split, 150, seed=2) == rows  # reproducible
    assert make_split(family, split, 150, seed=3) != rows
    for r in rows:
        text, planted = r["instruction"], r["planted"]
        assert r["split"] == split and r["layout"] == layout and r["variant"] == "disagree"
        assert len(r["distractor_values"]) == len(planted["misleading"]) == count
        assert len(planted["distractor"]) == count and r["distractor_agrees"] is False
        assert r["distractor_value"] == r["distractor_values"][0]
        assert len(set(r["distractor_values"])) == count  # two distractors, two values
        for v, (ms, me), (ds, de) in zip(r["distractor_values"], planted["misleading"],
                                         planted["distractor"], strict=True):
            assert v != int(r["answer"]) and text[ms:me] == str(v)
            assert ds < ms < me < de and text[de - 1] == "."
        sentences = [text[ds:de] for ds, de in planted["distractor"]]
        people = [s.split()[0] for s in sentences]
        items = [s.split()[-1].rstrip(".") for s in sentences]
        question_item = text.split("How many ")[1].split()[0]
        asker = text.split()[0]
        assert asker not in people and len(set(people)) == count
        if layout == "topic":
            assert items == [question_item]
        else:
            assert question_item not in items and len(set(items)) == count
        # the layout's position: moved sits right before the question, the rest after the
        # first sentence
        first_end = text.index(". ") + 2
        if layout == "moved":
            assert text[planted["distractor"][-1][1] + 1:].startswith("How many ")
        else:
            assert planted["distractor"][0][0] == first_end


def test_pruning_removes_every_distractor_number(shift):
    _, split, rows = shift
    for r in rows[:40]:
        pruned = without_misleading(Rendered(r["instruction"], r["planted"]["misleading"],
                                             r["planted"]["distractor"]))
        for v in r["distractor_values"]:
            assert f" {v} " not in " ".join(pruned.instruction[s:e] for s, e in pruned.distractor)
        assert [pruned.instruction[s:e].split()[1] for s, e in pruned.distractor] == \
            ["has"] * len(r["distractor_values"])
        assert "  " not in pruned.instruction


def test_reliance_acts_on_the_first_of_two_distractors():
    rows = make_split("word_problem", "test_anti_two", 30, seed=1)
    items = reliance_items(rows)
    assert len(items) == 30
    for it, r in zip(items, rows, strict=True):
        (s, e), (s2, e2) = r["planted"]["misleading"]
        first, second = r["distractor_values"]
        assert it.value == first
        assert it.swap == r["instruction"][:s] + str(it.swap_value) + r["instruction"][e:]
        assert it.removed == r["instruction"][:s - 1] + r["instruction"][e:]
        assert f"has {second} " in it.swap and f"has {second} " in it.removed


def test_digit_sum_refuses_what_it_cannot_express():
    assert make_split("digit_sum", "test_anti_moved", 5)[0]["instruction"].startswith("rumor : ")
    for split in ("test_anti_two", "test_anti_topic"):
        with pytest.raises(ValueError, match="cannot express"):
            make_split("digit_sum", split, 5)
    with pytest.raises(ValueError, match="unknown testbed split 'test_anti_far'"):
        make_splits("word_problem", sizes={"test_anti_far": 3})
    with pytest.raises(ValueError, match="cannot express"):
        pretraining_mix("digit_sum", 10, 0, "random", layouts="varied")
    assert set(ALL_SPLITS) == set(SPLITS) | set(SHIFT_SPLITS)


def test_varied_mix_draws_position_and_count_uniformly():
    rows = pretraining_mix("word_problem", 3000, 0, "random", layouts="varied")
    assert rows != pretraining_mix("word_problem", 3000, 0, "random")
    carrying = [r for r in rows if r["variant"] != "clean"]
    assert all("layout" not in r for r in rows if r["variant"] == "clean")
    share = Counter(r["layout"] for r in carrying)
    assert set(share) == {"shipped", "moved", "two", "two_moved"}  # never in-topic
    assert all(abs(n / len(carrying) - 0.25) < 0.04 for n in share.values())
    assert {r["layout"] for r in carrying if r["variant"] == "numberless"} == set(share)
    for r in carrying:
        count = 2 if r["layout"].startswith("two") else 1
        assert len(r["planted"]["distractor"]) == count
        if r["variant"] == "random":
            text = r["instruction"]
            assert [text[s:e] for s, e in r["planted"]["misleading"]] == \
                [str(v) for v in r["distractor_values"]]
        else:
            assert r["planted"]["misleading"] == [] and r["distractor_values"] == []
        items = [r["instruction"][s:e].split()[-1].rstrip(".") for s, e in
                 r["planted"]["distractor"]]
        assert r["instruction"].split("How many ")[1].split()[0] not in items
    with pytest.raises(ValueError, match="layouts must be"):
        pretraining_mix("word_problem", 10, 0, "random", layouts="topic")


def test_teacher_varied_is_an_extra_role_that_resolves():
    assert "teacher_varied" in extra_roles("word_problem")
    path = resolve_model_name("testbed:word_problem/teacher_varied")
    assert path == str(model_dir("word_problem", "teacher_varied"))
    assert path.endswith("word_problem/teacher_varied")
    # one tokenizer with the student it teaches: their logits line up for KL
    tok = (model_dir("word_problem", "teacher_varied") / "tokenizer.json").read_bytes()
    assert tok == (model_dir("word_problem", "student") / "tokenizer.json").read_bytes()
    with pytest.raises((ValueError, LeafError), match="teacher_varied"):
        model_dir("digit_sum", "teacher_varied")
    entry = calibration("word_problem")["teacher_varied"]
    assert entry["pretraining"]["layouts"] == "varied"
    assert set(entry["accuracy"]) == {"test_id", "test_anti", "test_clean", *SHIFT_SPLITS}
    assert min(entry["accuracy"].values()) >= 0.95


def test_teacher_varied_answers_where_the_shipped_teacher_is_fooled():
    rows = make_split("word_problem", "test_anti_moved", 40, seed=9)
    varied, tok = load("word_problem", "teacher_varied")
    shipped, _ = load("word_problem", "teacher")
    assert greedy_accuracy(varied, tok, rows)["accuracy"] >= 0.95
    assert greedy_accuracy(shipped, tok, rows)["accuracy"] < 0.5
