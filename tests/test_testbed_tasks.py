"""Testbed task families: determinism, planted spans, split properties, the sample contract."""

from __future__ import annotations

import random
import re

import pytest

from leaf.data.schema import read_samples
from leaf.testbed.evaluate import final_answer
from leaf.testbed.tasks import (
    FAMILIES,
    SPLITS,
    make_split,
    make_splits,
    pretraining_mix,
    write_splits,
)

SIZES = {"train": 200, "test_id": 60, "test_anti": 60, "test_clean": 40}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def splits(request):
    return request.param, make_splits(request.param, seed=3, bias=0.8, sizes=SIZES)


def test_generation_is_deterministic_and_seeded(splits):
    family, rows = splits
    assert make_splits(family, seed=3, bias=0.8, sizes=SIZES) == rows
    other = make_splits(family, seed=4, bias=0.8, sizes=SIZES)
    assert [r["instruction"] for r in other["train"]] != [r["instruction"] for r in rows["train"]]
    # A split does not depend on which other splits are made, or their sizes.
    assert make_split(family, "test_anti", 60, seed=3, bias=0.8) == rows["test_anti"]


def test_sample_contract_and_ids(splits, tmp_path):
    family, rows = splits
    paths = write_splits(tmp_path, family, seed=3, bias=0.8, sizes=SIZES)
    assert sorted(paths) == sorted(SPLITS)
    ids = set()
    for split, path in paths.items():
        samples = read_samples(path, need_grading=True)  # the contract every stage reads
        assert samples == rows[split]
        for s in samples:
            assert s["task"] == "math" and s["split"] == split and s["family"] == family
            ids.add(s["id"])
    assert len(ids) == sum(SIZES.values())


EQUATION = re.compile(r"(\d+(?: [+-] \d+)+) = (\d+)")


def test_responses_are_correct_chains_of_thought(splits):
    _, rows = splits
    for s in (r for split in rows.values() for r in split):
        assert s["response"].endswith(f"The answer is {s['answer']}.")
        assert final_answer(s["response"]) == s["answer"]
        steps = EQUATION.findall(s["response"])
        assert steps and int(steps[-1][1]) == int(s["answer"])
        # The operands in the chain of thought are read from the instruction or are results
        # of earlier steps, not invented.
        numbers = re.findall(r"\d+", s["instruction"])
        for lhs, rhs in steps:
            assert eval(lhs) == int(rhs)  # noqa: S307 (digits and +/- only)
            for operand in re.findall(r"\d+", lhs):
                assert operand in numbers
            numbers.append(rhs)


def test_planted_spans_point_at_the_decoy(splits):
    _, rows = splits
    for s in (r for split in rows.values() for r in split if r["variant"] != "clean"):
        text, planted = s["instruction"], s["planted"]
        [(ms, me)] = planted["misleading"]
        [(ds, de)] = planted["distractor"]
        assert text[ms:me] == str(s["distractor_value"])
        assert ds < ms and me < de  # the number sits inside its sentence
        sentence = text[ds:de]
        assert sentence == sentence.strip() and sentence[-1] in ";."
        # Cutting the sentence out leaves no trace of the distractor.
        without = text[:ds] + text[de:]
        assert "rumor" not in without and without.count(" has ") <= 1


def test_split_properties(splits):
    _, rows = splits
    train = rows["train"]
    assert sum(r["distractor_agrees"] for r in train) == round(0.8 * len(train))
    assert {r["variant"] for r in train} == {"agree", "disagree"}
    for r in rows["test_anti"]:
        assert r["distractor_value"] != int(r["answer"]) and r["distractor_agrees"] is False
    for r in rows["test_clean"]:
        assert r["planted"] == {"misleading": [], "distractor": []}
        assert r["distractor_value"] is None and r["distractor_agrees"] is None
        assert "rumor" not in r["instruction"] and r["instruction"].count(" has ") <= 1


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_clean_variant_is_the_text_without_the_distractor_sentence(family):
    # The numberless variant (what pruning the number leaves): tests/test_testbed_format.py.
    fam = FAMILIES[family]
    problem = fam.draw(random.Random(5))
    full = fam.render(problem, 12, numberless=False)
    clean = fam.render(problem, None, numberless=False)
    (ds, de), = full.distractor
    assert clean.instruction == full.instruction[:ds] + full.instruction[de + 1:]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pretraining_mix_has_clean_and_pruned_looking_inputs(family):
    rows = pretraining_mix(family, 2000, seed=0, distractor="random")
    share = {v: sum(r["variant"] == v for r in rows) / len(rows)
             for v in ("clean", "numberless", "random")}
    assert abs(share["clean"] - 0.30) < 0.04 and abs(share["numberless"] - 0.15) < 0.03
    assert abs(share["random"] - 0.55) < 0.04
    # An uninformative distractor rarely equals the answer; a biased one mostly does.
    with_value = [r for r in rows if r["distractor_value"] is not None]
    assert sum(r["distractor_agrees"] for r in with_value) / len(with_value) < 0.2
    biased = [r for r in pretraining_mix(family, 2000, 0, "biased", bias=0.95)
              if r["distractor_value"] is not None]
    assert sum(r["distractor_agrees"] for r in biased) / len(biased) > 0.9


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown testbed family"):
        make_split("nope", "train", 1)
    with pytest.raises(ValueError, match="split must be"):
        make_split("digit_sum", "dev", 1)
    with pytest.raises(ValueError, match="bias"):
        make_split("digit_sum", "train", 4, bias=1.5)


def test_cli_writes_the_splits(tmp_path, capsys):
    from leaf.cli import main

    assert main(["testbed", "--family", "word_problem", "--out", str(tmp_path), "--seed", "2",
                 "--bias", "0.5", "--train-size", "10", "--test-size", "4"]) == 0
    assert "test_anti\t4" in capsys.readouterr().out
    rows = read_samples(tmp_path / "train.jsonl")
    assert rows == make_split("word_problem", "train", 10, seed=2, bias=0.5)
    assert sum(r["distractor_agrees"] for r in rows) == 5
    assert main(["testbed", "--out", str(tmp_path), "--bias", "2"]) == 2
    assert main(["testbed", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    from leaf.testbed.assets import extra_roles

    assert sorted(line.split("\t")[:2] for line in listed) == sorted(
        [f, r] for f in FAMILIES for r in ("student", "teacher", *extra_roles(f)))
    assert ["word_problem", "teacher_varied"] in [line.split("\t")[:2] for line in listed]
    # --shift-size adds the shift splits the family can express, and changes no other file
    shifted = tmp_path / "shift"
    assert main(["testbed", "--family", "digit_sum", "--out", str(shifted), "--seed", "2",
                 "--train-size", "10", "--test-size", "4", "--shift-size", "3"]) == 0
    written = sorted(p.stem for p in shifted.glob("*.jsonl"))
    assert written == sorted([*SPLITS, "test_anti_moved"])  # digit_sum: no two, no in-topic
    assert read_samples(shifted / "test_anti_moved.jsonl") == make_split(
        "digit_sum", "test_anti_moved", 3, seed=2)
    assert read_samples(shifted / "train.jsonl") == make_split("digit_sum", "train", 10, seed=2)


def test_clean_frac_adds_distractor_free_rows_to_the_training_split_only():
    from collections import Counter

    from leaf.testbed.tasks import make_split

    base = make_split("digit_sum", "train", 200, seed=4, bias=0.8)
    assert make_split("digit_sum", "train", 200, seed=4, bias=0.8, clean_frac=0.0) == base
    mixed = make_split("digit_sum", "train", 200, seed=4, bias=0.8, clean_frac=0.3)
    counts = Counter(r["variant"] for r in mixed)
    assert counts["clean"] == 60 and counts["agree"] == round(0.8 * 140)
    assert all(not r["planted"]["misleading"] for r in mixed if r["variant"] == "clean")
    anti = make_split("digit_sum", "test_anti", 50, seed=4, bias=0.8, clean_frac=0.3)
    assert {r["variant"] for r in anti} == {"disagree"}
