"""Math answers: extraction order and math-verify equivalence, table-driven."""

from __future__ import annotations

import threading

import pytest

from leaf.evaluate.math_grader import extract_answer, grade_math, is_equivalent, last_boxed

EXTRACT = [
    ("so x = \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("nested \\boxed{\\frac{\\sqrt{3}}{2}} done", "\\frac{\\sqrt{3}}{2}"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\left\\{1, 2\\right\\}}", "\\left\\{1, 2\\right\\}"),
    ("\\fbox{7}", "7"),
    ("Adding them up.\nThe answer is 72.", "72"),
    ("The final answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("Answer: 12 apples", "12 apples"),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("She has 3 cats and 5 dogs, 8 pets in total", "8"),
    ("it costs 1,000 dollars", "1,000"),
    ("temperature drops to -3.5 degrees", "-3.5"),
    ("no number here", None),
    ("the boxed answer \\boxed{12} beats the answer is 5", "12"),
]


@pytest.mark.parametrize("text,expected", EXTRACT)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_last_boxed_unbalanced_is_none():
    assert last_boxed("\\boxed{1 + {2}") is None


EQUIVALENT = [
    ("0.5", "\\frac{1}{2}"),
    ("\\frac12", "1/2"),
    ("\\dfrac{2}{4}", "0.5"),
    ("72.0", "72"),
    ("1,000", "1000"),
    ("10\\%", "10"),
    ("50\\%", "0.5"),
    ("5 \\text{ cm}", "5"),
    ("18 dollars", "18"),
    ("\\$18.00", "18"),
    ("90^\\circ", "90"),
    ("(1, 2]", "(1,2]"),
    ("[0, 1)", "x \\in [0, 1)"),
    ("2, 1", "1, 2"),
    ("\\{1, 2\\}", "1,2"),
    ("x = 3", "3"),
    ("\\sqrt{18}", "3\\sqrt{2}"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("(x+1)^2", "x^2 + 2x + 1"),
    ("\\text{(A)}", "A"),
    ("\\infty", "\\infty"),
    ("East", "east"),
    ("4\\frac{2}{3}", "\\frac{14}{3}"),  # mixed number
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\pm 2", "2, -2"),
    ("(-\\infty, -3) \\cup (3, \\infty)", "(-\\infty,-3)\\cup(3,\\infty)"),
    ("2^{10}", "1024"),
    ("6{,}000", "6000"),
    ("y = 2x + 3", "2x+3"),
]
NOT_EQUIVALENT = [
    ("3", "2"),
    ("-5", "5"),
    ("(1, 2)", "[1, 2]"),
    ("(3, -1)", "(-1, 3)"),
    ("2", "2, 3"),
    ("0.33", "\\frac{1}{3}"),
    ("7", "17"),
    ("\\sqrt{2}", "2"),
    ("", "1"),
    ("4\\frac{2}{3}", "\\frac{8}{3}"),
    ("(-\\infty, 2)", "(-\\infty, 2]"),
    ("1, 3", "1, 3, 5"),
    ("\\text{Monday}", "Tuesday"),
]


@pytest.mark.parametrize("pred,gold", EQUIVALENT)
def test_equivalent(pred, gold):
    assert is_equivalent(pred, gold)


@pytest.mark.parametrize("pred,gold", NOT_EQUIVALENT)
def test_not_equivalent(pred, gold):
    assert not is_equivalent(pred, gold)


def test_none_prediction_is_wrong():
    assert not is_equivalent(None, "1")


def test_grade_math_end_to_end():
    res = grade_math("48 / 2 = 24, 48 + 24 = 72.\nThe answer is \\boxed{72}.", 72)
    assert res == {"correct": True, "extracted": "72"}
    assert grade_math("The answer is 71.", "72")["correct"] is False


def test_works_in_worker_threads():
    """math-verify's signal-based timeout must not break grading off the main thread."""
    results = {}

    def work():
        results["eq"] = is_equivalent("\\frac{1}{2}", "0.5")
        results["ne"] = is_equivalent("\\frac{1}{3}", "0.5")

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert results == {"eq": True, "ne": False}


def test_last_number_ignores_dashes_between_digits():
    assert extract_answer("released on 2023-08-01") == "01"
    assert extract_answer("so 5-3 = 2 and x = -4") == "-4"
