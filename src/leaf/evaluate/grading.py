"""Grade one response to one sample, whatever its task.

- ``math``: :mod:`leaf.evaluate.math_grader` against ``answer``;
  result ``{"correct", "extracted"}``.
- ``qa``: :mod:`leaf.evaluate.qa_grader` against ``answer`` (a string or a list);
  result ``{"correct", "extracted", "em", "f1", "subem"}``; ``correct`` is exact match.
- ``code``: the program is taken from the response by ``leaf.evaluate.code.extract_code`` and
  run against the sample's ``tests`` in the sandbox (``leaf.evaluate.code.run_tests``);
  result ``{"correct", "status", "detail"}``.

An answer cut at ``max_new_tokens`` (``truncated=True``) is not graded: whatever number or
program it stopped in the middle of is not the model's answer. It counts as wrong, with the
task's fields at their wrong values, ``truncated: true`` and a ``reason``.
"""

from __future__ import annotations

from typing import Any

from leaf.errors import LeafError

CODE_TIMEOUT = 10.0
TRUNCATED_REASON = "cut at max_new_tokens before the model ended its answer: not graded"


def grade(sample: dict[str, Any], response_text: str, *, truncated: bool = False,
          code_timeout: float = CODE_TIMEOUT) -> dict[str, Any]:
    """Grade ``response_text`` as an answer to ``sample``; always has ``correct`` (bool).
    ``truncated``: the answer was cut at ``max_new_tokens`` (:func:`truncated_result`)."""
    task = sample.get("task")
    if truncated:
        return truncated_result(sample)
    if task == "math":  # each grader loads with its task: math-verify, the code sandbox
        from leaf.evaluate.math_grader import grade_math

        return grade_math(response_text, _answer(sample))
    if task == "qa":
        from leaf.evaluate.qa_grader import grade_qa

        return grade_qa(response_text, _answer(sample))
    if task == "code":
        from leaf.evaluate.code import extract_code, run_tests

        if not sample.get("tests"):
            raise LeafError(f"sample {sample.get('id')!r}: code samples need 'tests' to be graded")
        result = run_tests(extract_code(response_text), sample, timeout=code_timeout)
        return {"correct": bool(result.passed), "status": result.status, "detail": result.detail}
    raise LeafError(f"sample {sample.get('id')!r}: cannot grade task {task!r}")


def truncated_result(sample: dict[str, Any]) -> dict[str, Any]:
    """The grade of a cut answer to ``sample``: wrong, with its task's fields (an ``em`` of 0,
    a ``status``) so that metrics aggregate it like any wrong answer."""
    task = sample.get("task")
    out: dict[str, Any] = {"correct": False, "truncated": True, "reason": TRUNCATED_REASON}
    if task == "math":
        out["extracted"] = None
    elif task == "qa":
        out.update(extracted=None, em=0.0, f1=0.0, subem=0.0)
    elif task == "code":
        out.update(status="truncated", detail=TRUNCATED_REASON)
    else:
        raise LeafError(f"sample {sample.get('id')!r}: cannot grade task {task!r}")
    return out


def _answer(sample: dict[str, Any]):
    answer = sample.get("answer")
    if answer is None or answer == "" or answer == []:
        raise LeafError(f"sample {sample.get('id')!r}: {sample.get('task')} samples need an "
                        "'answer' to be graded")
    return answer
