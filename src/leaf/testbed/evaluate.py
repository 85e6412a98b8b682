"""Greedy accuracy of a testbed model on samples, through leaf's own generation and grader.

The prompt is the chat template's generation prompt; the model decodes greedily
(:class:`leaf.evaluate.generation.HFGenerator`) and the answer is graded by
:func:`leaf.evaluate.math_grader.grade_math` ("The answer is N", else the last number).
"""

from __future__ import annotations

from leaf.evaluate.generation import GenerationSettings, HFGenerator
from leaf.evaluate.math_grader import extract_answer, grade_math


def final_answer(text: str) -> str | None:
    """The answer the math grader extracts from ``text`` (None when there is none)."""
    return extract_answer(text)


def greedy_generate(
    model, tokenizer, instructions: list[str], batch_size: int = 64, max_new_tokens: int = 32
) -> list[str]:
    """Greedy continuations of each instruction's chat prompt."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  progress=False)
    model.eval()
    return HFGenerator(model, tokenizer, settings).generate(instructions)


def greedy_accuracy(model, tokenizer, samples: list[dict], batch_size: int = 64) -> dict:
    """``{"accuracy", "n", "correct": [bool per sample], "responses": [...]}``."""
    responses = greedy_generate(model, tokenizer, [s["instruction"] for s in samples], batch_size)
    correct = [grade_math(r, s["answer"])["correct"] for r, s in zip(responses, samples)]
    return {
        "accuracy": sum(correct) / max(len(correct), 1),
        "n": len(correct),
        "correct": correct,
        "responses": responses,
    }
