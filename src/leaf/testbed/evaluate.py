"""Greedy accuracy of a testbed model on samples (a small stand-in for ``leaf.evaluate``).

The prompt is the chat template's generation prompt (``leaf.data.templates.prompt_text``); the
model decodes greedily and the number after the last "answer is" (else the last number) is
compared with the sample's ``answer``.
"""

from __future__ import annotations

import re

import torch

from leaf.data.templates import prompt_text

_ANSWER = re.compile(r"answer is\s*(-?\d+)")
_NUMBER = re.compile(r"-?\d+")


def final_answer(text: str) -> str | None:
    """The number after the last ``answer is``, else the last number in ``text``, else None."""
    found = _ANSWER.findall(text) or _NUMBER.findall(text)
    return found[-1] if found else None


@torch.no_grad()
def greedy_generate(
    model, tokenizer, instructions: list[str], batch_size: int = 64, max_new_tokens: int = 32
) -> list[str]:
    """Greedy continuations of each instruction's chat prompt (special tokens stripped)."""
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[str] = []
    try:
        for i in range(0, len(instructions), batch_size):
            prompts = [prompt_text(tokenizer, x) for x in instructions[i : i + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            out += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def greedy_accuracy(model, tokenizer, samples: list[dict], batch_size: int = 64) -> dict:
    """``{"accuracy", "n", "correct": [bool per sample], "responses": [...]}``."""
    responses = greedy_generate(model, tokenizer, [s["instruction"] for s in samples], batch_size)
    correct = [final_answer(r) == str(s["answer"]) for r, s in zip(responses, samples)]
    return {
        "accuracy": sum(correct) / max(len(correct), 1),
        "n": len(correct),
        "correct": correct,
        "responses": responses,
    }
