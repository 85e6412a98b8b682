"""The `multi_step` testbed family: a three-step running total, one step per response line.

What the other families share is checked by tests/test_testbed_tasks.py and
tests/test_testbed_format.py (parametrised over ``FAMILIES``); here, what is particular to this
one: the text of its planted spans, the chained steps, and where response-level detection cuts.
"""

from __future__ import annotations

import random
import re

import pytest

from leaf.detect.segments import segment_boundaries
from leaf.testbed.tasks import (
    FAMILIES,
    make_sample,
    make_split,
    pretraining_mix,
    without_misleading,
)

FAMILY = FAMILIES["multi_step"]
STEP = re.compile(r"^(\d+) ([+-]) (\d+) = (\d+)$")
SEEDS = range(300)


def _problems():
    for seed in SEEDS:
        yield FAMILY.draw(random.Random(seed))


def test_example_text():
    problem = {"who": "Ann", "other": "Bob", "item": "coins", "other_item": "cards",
               "operands": [5, 3, 2, 4], "ops": ["+", "-", "+"], "answer": 10}
    rendered = FAMILY.render(problem, 12)
    assert rendered.instruction == ("Ann has 5 coins. Bob has 12 cards. Ann buys 3 more. "
                                    "Ann gives away 2. Ann buys 4 more. "
                                    "How many coins does Ann have now?")
    assert rendered.misleading == [[25, 27]] and rendered.distractor == [[17, 34]]
    assert FAMILY.response(problem) == "5 + 3 = 8\n8 - 2 = 6\n6 + 4 = 10\nThe answer is 10."
    assert FAMILY.render(problem, None, numberless=True).instruction == (
        "Ann has 5 coins. Bob has cards. Ann buys 3 more. Ann gives away 2. Ann buys 4 more. "
        "How many coins does Ann have now?")


def test_answers_stay_in_the_value_range():
    lo, hi = FAMILY.value_range
    totals = []
    for p in _problems():
        total = p["operands"][0]
        for op, b in zip(p["ops"], p["operands"][1:]):
            total = total + b if op == "+" else total - b
            assert lo <= total <= hi  # intermediate results too: never zero or negative
        assert total == p["answer"]
        totals.append(total)
    assert len(set(totals)) > 15


@pytest.mark.parametrize("variant", ["agree", "disagree", "random"])
def test_planted_spans_are_the_number_and_its_sentence(variant):
    for seed in SEEDS:
        rng = random.Random(seed)
        s = make_sample(FAMILY, rng, variant, f"m-{seed}", "test")
        problem = FAMILY.draw(random.Random(seed))  # the same draw make_sample made
        text, value = s["instruction"], s["distractor_value"]
        [(ms, me)] = s["planted"]["misleading"]
        [(ds, de)] = s["planted"]["distractor"]
        assert text[ms:me] == str(value)
        assert text[ds:de] == f"{problem['other']} has {value} {problem['other_item']}."
        # The number is the only digit run of the sentence, and the sentence the only mention
        # of the other person.
        assert re.findall(r"\d+", text[ds:de]) == [str(value)]
        assert problem["other"] not in text[:ds] + text[de:]


def test_without_misleading_cuts_the_number_and_its_space():
    for p in _problems():
        value = random.Random(str(p)).randint(*FAMILY.value_range)
        full = FAMILY.render(p, value)
        pruned = without_misleading(full)
        [(ms, me)] = full.misleading
        assert pruned.instruction == full.instruction[:ms - 1] + full.instruction[me:]
        assert pruned.misleading == []
        [(ds, de)] = pruned.distractor
        assert pruned.instruction[ds:de] == f"{p['other']} has {p['other_item']}."
        # Whatever the number was, the pruned text is the one numberless rows are made of.
        assert pruned.instruction == FAMILY.render(p, None, numberless=True).instruction


def test_responses_are_chained_steps_one_per_line():
    for p in _problems():
        lines = FAMILY.response(p).split("\n")
        assert len(lines) == FAMILY.steps + 1 >= 4
        previous = str(p["operands"][0])
        for line, op, b in zip(lines, p["ops"], p["operands"][1:]):
            first, sign, second, result = STEP.match(line).groups()
            assert (first, sign, second) == (previous, op, str(b))  # starts from the last result
            previous = result
        assert lines[-1] == f"The answer is {p['answer']}." and previous == str(p["answer"])


def test_response_segments_cut_between_steps():
    """K = 2 response-level detection cuts at a line start; the prefix holds whole steps with
    their intermediate results."""
    for p in _problems():
        response = FAMILY.response(p)
        [cut] = segment_boundaries(response, 2)
        assert response[cut - 1] == "\n"
        prefix, rest = response[:cut], response[cut:]
        assert all(STEP.match(line) for line in prefix.rstrip("\n").split("\n"))
        assert rest.endswith(f"The answer is {p['answer']}.")


def test_student_pretraining_distractor_mostly_gives_the_final_answer():
    rows = pretraining_mix("multi_step", 2000, seed=0, distractor="biased", bias=0.95)
    carrying = [r for r in rows if r["distractor_value"] is not None]
    agree = sum(r["distractor_agrees"] for r in carrying) / len(carrying)
    assert 0.93 < agree < 0.97
    anti = make_split("multi_step", "test_anti", 50, seed=0)
    assert all(r["distractor_value"] != int(r["answer"]) for r in anti)


def test_longest_response_fits_the_generation_budget():
    """Greedy evaluation stops after ``max_new_tokens``; a cut response would be graded on an
    intermediate result. The longest possible lines (two-digit totals and amounts) must fit,
    end-of-turn token included, and so must prompt + response in the run config's max_length."""
    from transformers import AutoTokenizer

    from leaf.data.templates import chat_layout
    from leaf.pipeline.config import PACKAGE_DIR, load_config
    from leaf.testbed.assets import model_dir

    tok = AutoTokenizer.from_pretrained(model_dir("multi_step", "teacher"))
    # Two digits wherever they can be: 9 + 9 = 18 / 18 + 9 = 27 / 27 - 10 = 17 / ... 17.
    longest = {"who": "Ann", "other": "Bob", "item": "shells", "other_item": "apples",
               "operands": [9, 9, 9, 10], "ops": ["+", "+", "-"], "answer": 17}
    response = FAMILY.response(longest)
    assert response.endswith("27 - 10 = 17\nThe answer is 17.")
    n_response = len(tok(response, add_special_tokens=False)["input_ids"]) + 1
    assert n_response <= FAMILY.max_new_tokens
    layout = chat_layout(tok, "x")
    samples = make_split("multi_step", "train", 500, seed=0)
    samples.append({"instruction": FAMILY.render(longest, 36).instruction, "response": response})
    cfg = load_config(PACKAGE_DIR / "configs" / "testbed" / "multi_step.yaml")
    for s in samples:
        text = layout.head + s["instruction"] + layout.tail + s["response"] + layout.end_of_turn
        assert len(tok(text, add_special_tokens=False)["input_ids"]) <= cfg.distill.args[
            "max_length"]
    assert cfg.screen.max_new_tokens == cfg.evaluate.max_new_tokens == FAMILY.max_new_tokens
