"""Math answers: find the final answer in a response and compare it with the gold one.

Extraction (:func:`extract_answer`) looks, in this order, for

1. the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces included;
2. the last "The (final) answer is ..." / "Answer: ..." statement (to the end of its line,
   a trailing full stop dropped);
3. the last ``#### ...`` line (GSM8K style);
4. as a fallback, the last number in the text (``-3``, ``1,000``, ``2.5``, ``3/4``).

A response with none of these has no answer and is graded wrong.

Equivalence (:func:`is_equivalent`) is decided by ``math_verify``: both strings are parsed as
LaTeX (so ``\\frac12``, ``0.5`` and ``1/2`` agree; ``10\\%`` equals ``0.1`` and ``10``; units in
``\\text{}`` and a plain trailing unit word are ignored; intervals keep their brackets; a
comma-separated list is a set, so the order of multiple answers does not matter; ``x = 3``
equals ``3``). When ``math_verify`` cannot parse either side, normalised strings are compared.

``math_verify`` bounds its sympy work with ``signal.alarm``, which only works in the main
thread. Here the timeout is used in the main thread and switched off in worker threads
(where ``signal`` would raise); answers longer than :data:`MAX_ANSWER_CHARS` are compared as
strings only, so sympy never sees an unbounded expression.
"""

from __future__ import annotations

import logging
import re
import threading

MAX_ANSWER_CHARS = 300
TIMEOUT_SECONDS = 5

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(
    r"\b(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE
)
_HASHES = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-+]?\.\d+")
_NUMBER_THEN_WORDS = re.compile(r"^([-+]?[\d,]*\.?\d+)\s+[A-Za-z][A-Za-z\s.]*$")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces, or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def _clean(answer: str) -> str:
    answer = answer.strip()
    answer = re.sub(r"[.\s]+$", "", answer)  # trailing full stop
    if len(answer) >= 2 and answer.startswith("$") and answer.endswith("$"):
        answer = answer.strip("$").strip()
    boxed = last_boxed(answer)
    if boxed is not None:
        answer = boxed
    return answer


def extract_answer(text: str) -> str | None:
    """The final answer written in ``text`` (see the module docstring for the order)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        found = _clean(matches[-1].group(1).splitlines()[0])
        if found:
            return found
    hashes = _HASHES.findall(text)
    if hashes:
        return _clean(hashes[-1])
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(" ", "")
    return None


def _as_latex(answer: str) -> str:
    """Prepare an answer string for math_verify's LaTeX parser."""
    answer = _clean(answer)
    words = _NUMBER_THEN_WORDS.match(answer)
    if words:  # "18 dollars" -> "18"
        answer = words.group(1)
    if _THOUSANDS.match(answer):
        answer = answer.replace(",", "")
    return f"${answer}$"


def _normalise(answer: str) -> str:
    answer = re.sub(r"\\text\{([^}]*)\}", r"\1", _clean(answer))
    return re.sub(r"[\s$]", "", answer).lower()


def _parse(text: str, timeout: int | None):
    from math_verify import parse  # heavy: math-verify

    return parse(text, parsing_timeout=timeout)


def is_equivalent(predicted: str | None, gold: str | int | float) -> bool:
    """True when ``predicted`` and ``gold`` denote the same mathematical answer."""
    if predicted is None:
        return False
    gold = str(gold)
    if not predicted.strip() or not gold.strip():
        return False
    if _normalise(predicted) == _normalise(gold):
        return True
    if len(predicted) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    from math_verify import verify  # heavy: math-verify

    main = threading.current_thread() is threading.main_thread()
    timeout = TIMEOUT_SECONDS if main else None
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" notices
    gold_parsed = _parse(_as_latex(gold), timeout)
    pred_parsed = _parse(_as_latex(predicted), timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def grade_math(response: str, gold: str | int | float) -> dict:
    """``{"correct", "extracted"}`` for one response."""
    extracted = extract_answer(response)
    return {"correct": is_equivalent(extracted, gold), "extracted": extracted}
