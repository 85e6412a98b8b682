"""Stage 1, step 6: keep a counterfactual only when both models still answer it correctly.

Instruction-level rows are answered from their (pruned) ``instruction``. Response-level rows
(``level == "response"``) continue after the prompt plus the pruned ``prefix``; the answer that
is graded is ``prefix + continuation``, so a final answer already written in the prefix counts.

The teacher answers every row first; the student is then loaded (one model in memory at a
time) and answers only the rows the teacher got right, since a row needs both. An answer cut
at ``max_new_tokens`` is wrong (:func:`leaf.evaluate.grading.grade`), so a counterfactual
whose teacher or student answer was cut is never kept; :func:`check_counterfactuals` says
which model's answer it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from leaf.evaluate.generation import GenerationSettings, make_generator, release
from leaf.evaluate.grading import grade


@dataclass(frozen=True)
class Check:
    """One counterfactual's verification: ``ok`` when both models answered it correctly;
    ``truncated``: the models (``"teacher"``, ``"student"``) whose answer was cut at
    ``max_new_tokens`` (then ``ok`` is false)."""

    ok: bool
    truncated: tuple[str, ...] = ()


def _prefix(row: dict[str, Any]) -> str | None:
    return row.get("prefix") if row.get("level") == "response" else None


def answer_correct(generator, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """Generate with ``generator`` for each row and grade the answer (prefix included)."""
    return [ok for ok, _ in answer_checks(generator, rows)]


def answer_checks(generator, rows: Sequence[dict[str, Any]]) -> list[tuple[bool, bool]]:
    """``(correct, cut)`` for each row: its answer (prefix included) graded, and whether it
    was cut at ``max_new_tokens`` (then it is not correct)."""
    if not rows:
        return []
    prefixes = [_prefix(r) for r in rows]
    answers = generator.answers([r["instruction"] for r in rows], prefixes)
    return [(bool(grade(r, (p or "") + a.text, truncated=a.truncated)["correct"]), a.truncated)
            for r, p, a in zip(rows, prefixes, answers, strict=True)]


def verify_counterfactuals(rows: Sequence[dict[str, Any]], teacher: str, student: str,
                           **options: Any) -> list[bool]:
    """True for each row that BOTH ``teacher`` and ``student`` (model dirs or hub ids) solve:
    the ``ok`` of :func:`check_counterfactuals`, which takes the same ``options``."""
    return [c.ok for c in check_counterfactuals(rows, teacher, student, **options)]


def check_counterfactuals(
    rows: Sequence[dict[str, Any]],
    teacher: str,
    student: str,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    device: str = "auto",
    dtype: str = "float32",
    backend: str = "hf",
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[Check]:
    """A :class:`Check` for each row: do BOTH ``teacher`` and ``student`` (model dirs or hub
    ids) solve it (greedy unless ``temperature > 0``), and whose answer was cut."""
    rows = list(rows)
    if not rows:
        return []
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  temperature=temperature, top_p=top_p, seed=seed,
                                  progress=False)  # the caller's bar (leaf prune) is the one
    verdict = [False] * len(rows)
    cut: list[list[str]] = [[] for _ in rows]
    for step, (who, name) in enumerate((("teacher", teacher), ("student", student))):
        todo = list(range(len(rows))) if step == 0 else [i for i, ok in enumerate(verdict) if ok]
        if not todo:
            break
        generator = make_generator(name, backend=backend, dtype=dtype, device=device,
                                   settings=settings)
        checks = answer_checks(generator, [rows[i] for i in todo])
        release(generator)
        for i, (ok, was_cut) in zip(todo, checks, strict=True):
            verdict[i] = ok
            if was_cut:
                cut[i].append(who)
    return [Check(ok, tuple(who)) for ok, who in zip(verdict, cut, strict=True)]
