"""Causal reliance on a planted distractor: does the answer move when the distractor does?

Attention share says where a model looks, not whether what it sees changes its answer. This
measure intervenes instead. For each item whose instruction has a planted *misleading* span (the
distractor's number, ``planted.misleading``) and whose distractor disagrees with the answer:

- ``swap``: the number is replaced by another wrong value (the first of ``v + 1``, ``v + 2``,
  ``v - 1``, ``v - 2`` that is neither the answer nor ``v``);
- ``removed``: the number is cut out (whitespace at the cut collapsed to one space).

With several distractors (the testbed's two-distractor split), the interventions act on the
*first* one, the one ``distractor_value`` names (its span is the first of
``planted.misleading``); the others stay in place.

Per model it records, over the items: ``follows`` (share of greedy answers equal to the
distractor's value, on the original input) and ``follows_swap`` (equal to the *new* value after
the swap: the answer moved with the distractor), ``correct`` on each input, and the mean change
of the teacher-forced log-probability of the reference response (``dlogp_swap``,
``dlogp_removed``: input minus original; a model that relies on the distractor gains
probability on the right answer when it is removed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from leaf.data.templates import encode
from leaf.evaluate.generation import GenerationSettings, make_generator, release
from leaf.evaluate.grading import grade


@dataclass(frozen=True)
class RelianceItem:
    """One anti-correlated item and its two interventions."""

    id: str
    sample: dict[str, Any]  # the original sample (task, answer, response)
    value: int  # the distractor's value in the original instruction
    swap_value: int
    original: str
    swap: str
    removed: str


def _swap_value(value: int, answer: str) -> int | None:
    for v in (value + 1, value + 2, value - 1, value - 2):
        if v >= 0 and str(v) != str(answer).strip():
            return v
    return None


def reliance_items(rows: Iterable[dict[str, Any]]) -> list[RelianceItem]:
    """The items of ``rows`` the measure applies to: a planted misleading span holding an
    integer distractor value that differs from the answer (the anti-correlated case); with
    several spans, the first, which holds ``distractor_value``."""
    out = []
    for r in rows:
        spans = ((r.get("planted") or {}).get("misleading")) or []
        value = r.get("distractor_value")
        if not spans or not isinstance(value, int) or str(value) == str(r.get("answer")):
            continue
        s, e = spans[0]
        text = r["instruction"]
        if text[s:e] != str(value):
            continue
        new = _swap_value(value, r["answer"])
        if new is None:
            continue
        removed = re.sub(r"[ \t]{2,}", " ", text[:s] + text[e:])
        out.append(RelianceItem(r["id"], r, value, new, text, text[:s] + str(new) + text[e:],
                                removed))
    return out


def response_logprob(model, tokenizer, instruction: str, response: str) -> float:
    """Teacher-forced log-probability of ``response`` after ``instruction`` (chat template)."""
    import torch  # heavy: only when a model is measured

    enc = encode(tokenizer, instruction, response, 0)
    ids = torch.tensor([enc.input_ids], device=next(model.parameters()).device)
    mask = enc.label_mask()
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    picked = logp.gather(-1, targets.view(-1, 1)).squeeze(-1)
    keep = torch.tensor([bool(m) for m in mask[1:]], device=picked.device)
    return float(picked[keep].sum())


def measure_reliance(model_path: str, items: Sequence[RelianceItem], *, device: str = "cpu",
                     dtype: str = "float32", batch_size: int = 64,
                     max_new_tokens: int = 48) -> dict[str, Any]:
    """The reliance figures of one model on ``items`` (see the module docstring), with
    ``per_item`` rows for intervals."""

    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  progress=False)
    gen = make_generator(model_path, backend="hf", dtype=dtype, device=device, settings=settings)
    texts = [x for it in items for x in (it.original, it.swap, it.removed)]
    answers = gen.generate(texts)
    model, tok = gen.model, gen.tokenizer
    per_item = []
    for k, it in enumerate(items):
        a_orig, a_swap, a_rem = answers[3 * k: 3 * k + 3]
        lp = [response_logprob(model, tok, x, it.sample["response"])
              for x in (it.original, it.swap, it.removed)]
        per_item.append({
            "id": it.id,
            "follows": bool(grade({**it.sample, "answer": str(it.value)}, a_orig)["correct"]),
            "follows_swap": bool(grade({**it.sample, "answer": str(it.swap_value)},
                                       a_swap)["correct"]),
            "correct": bool(grade(it.sample, a_orig)["correct"]),
            "correct_swap": bool(grade(it.sample, a_swap)["correct"]),
            "correct_removed": bool(grade(it.sample, a_rem)["correct"]),
            "dlogp_swap": lp[1] - lp[0], "dlogp_removed": lp[2] - lp[0]})
    release(gen)
    return {"n_items": len(per_item), **summarise_items(per_item), "per_item": per_item}


FIELDS = ("follows", "follows_swap", "correct", "correct_swap", "correct_removed",
          "dlogp_swap", "dlogp_removed")


def summarise_items(per_item: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Mean of each field over the items (None without items)."""
    n = len(per_item)
    return {f: (sum(float(p[f]) for p in per_item) / n if n else None) for f in FIELDS}
