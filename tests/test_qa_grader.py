"""QA metrics: SQuAD normalisation, EM / F1 / SubEM over several gold answers."""

from __future__ import annotations

import pytest

from leaf.evaluate.qa_grader import extract_answer, grade_qa, normalize_answer, qa_scores

NORMALISE = [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an  APPLE, a day ", "apple day"),
    ("U.S.A.", "usa"),
    ("Theatre", "theatre"),  # "the" only as a word
]


@pytest.mark.parametrize("text,expected", NORMALISE)
def test_normalize(text, expected):
    assert normalize_answer(text) == expected


SCORES = [
    # prediction, golds, em, f1, subem
    ("the Eiffel Tower", ["Eiffel Tower"], 1.0, 1.0, 1.0),
    ("Paris", ["London", "paris"], 1.0, 1.0, 1.0),
    ("in Paris, France", ["Paris"], 0.0, 0.5, 1.0),  # P = 1/3, R = 1
    ("Parisian", ["Paris"], 0.0, 0.0, 0.0),
    ("Barack Obama", ["Obama", "Barack Hussein Obama"], 0.0, 0.8, 1.0),
    ("nothing", ["something else"], 0.0, 0.0, 0.0),
    ("", ["x"], 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("pred,golds,em,f1,subem", SCORES)
def test_scores(pred, golds, em, f1, subem):
    s = qa_scores(pred, golds)
    assert s["em"] == em and s["subem"] == subem
    assert s["f1"] == pytest.approx(f1)


def test_single_string_gold():
    assert qa_scores("yes", "Yes")["em"] == 1.0


EXTRACT = [
    ("Both were born in 1950.\nAnswer: Paris.", "Paris"),
    ("Reasoning...\nThe answer is \"John Smith\".", "John Smith"),
    ("the answer is: **Berlin**", "Berlin"),
    ("Step 1: x.\nStep 2: y.\nLondon", "London"),
    ("Answer: first guess\nmore thinking\nFinal answer: second", "second"),
    ("", ""),
]


@pytest.mark.parametrize("text,expected", EXTRACT)
def test_extract(text, expected):
    assert extract_answer(text) == expected


def test_grade_qa_correct_is_em():
    res = grade_qa("The book was written by her.\nAnswer: the author", ["the author"])
    assert res["correct"] and res["em"] == 1.0 and res["extracted"] == "the author"
    res = grade_qa("Answer: the author of the book", ["the author"])
    assert not res["correct"] and res["subem"] == 1.0 and 0 < res["f1"] < 1
