"""Stage 1, step 6: keep a counterfactual only when both models still answer it correctly.

Instruction-level rows are answered from their (pruned) ``instruction``. Response-level rows
(``level == "response"``) continue after the prompt plus the pruned ``prefix``; the answer that
is graded is ``prefix + continuation``, so a final answer already written in the prefix counts.

The teacher answers every row first; the student is then loaded (one model in memory at a
time) and answers only the rows the teacher got right, since a row needs both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from leaf.evaluate.generation import GenerationSettings, make_generator, release
from leaf.evaluate.grading import grade


def _prefix(row: dict[str, Any]) -> str | None:
    return row.get("prefix") if row.get("level") == "response" else None


def answer_correct(generator, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """Generate with ``generator`` for each row and grade the answer (prefix included)."""
    if not rows:
        return []
    prefixes = [_prefix(r) for r in rows]
    outputs = generator.generate([r["instruction"] for r in rows], prefixes)
    return [bool(grade(r, (p or "") + out)["correct"])
            for r, p, out in zip(rows, prefixes, outputs, strict=True)]


def verify_counterfactuals(
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
) -> list[bool]:
    """True for each row that BOTH ``teacher`` and ``student`` (model dirs or hub ids) solve
    (greedy unless ``temperature > 0``)."""
    rows = list(rows)
    if not rows:
        return []
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  temperature=temperature, top_p=top_p, seed=seed,
                                  progress=False)  # the caller's bar (leaf prune) is the one
    verdict = [False] * len(rows)
    for step, name in enumerate((teacher, student)):
        todo = list(range(len(rows))) if step == 0 else [i for i, ok in enumerate(verdict) if ok]
        if not todo:
            break
        generator = make_generator(name, backend=backend, dtype=dtype, device=device,
                                   settings=settings)
        correct = answer_correct(generator, [rows[i] for i in todo])
        release(generator)
        for i, ok in zip(todo, correct, strict=True):
            verdict[i] = ok
    return verdict
