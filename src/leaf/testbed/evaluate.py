"""Greedy accuracy of a testbed model on samples, through leaf's own generation and grader.

The prompt is the chat template's generation prompt; the model decodes greedily
(:class:`leaf.evaluate.generation.HFGenerator`) and the answer is graded by
:func:`leaf.evaluate.math_grader.grade_math` ("The answer is N", else the last number). The
token budget is the samples' family's (``Family.max_new_tokens``: 32, 48 for the multi-step
family) unless one is given.
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


def token_budget(samples: list[dict]) -> int:
    """The largest ``max_new_tokens`` among the samples' families (32 for unknown ones)."""
    from leaf.testbed.tasks import FAMILIES, Family  # heavy: numpy

    return max((getattr(FAMILIES.get(s.get("family")), "max_new_tokens", Family.max_new_tokens)
                for s in samples), default=Family.max_new_tokens)


def greedy_accuracy(model, tokenizer, samples: list[dict], batch_size: int = 64,
                    max_new_tokens: int | None = None) -> dict:
    """``{"accuracy", "n", "correct": [bool per sample], "responses": [...]}``."""
    budget = max_new_tokens or token_budget(samples)
    responses = greedy_generate(model, tokenizer, [s["instruction"] for s in samples], batch_size,
                                budget)
    correct = [grade_math(r, s["answer"])["correct"] for r, s in zip(responses, samples)]
    return {
        "accuracy": sum(correct) / max(len(correct), 1),
        "n": len(correct),
        "correct": correct,
        "responses": responses,
    }
