"""Question answering: EM, F1 and SubEM against one or several gold answers.

Normalisation follows the SQuAD evaluation script: lowercase, remove punctuation, remove the
articles "a", "an", "the", collapse whitespace. With several gold answers each metric is the
maximum over them.

- EM: normalised prediction equals a normalised gold answer.
- F1: token-level F1 between the two bags of normalised words.
- SubEM: a normalised gold answer occurs inside the normalised prediction (as a substring of
  the word sequence, so "paris" matches "in paris france" but not "parisian").

Models answer with reasoning, so the answer is first extracted (:func:`extract_answer`):
the text after the last "Answer:" or "The (final) answer is", else the last non-empty line;
a trailing full stop and surrounding quotes or ``**`` are removed.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_ANSWER = re.compile(r"(?:\banswer\s*(?:is|:)|\bthe\s+(?:final\s+)?answer\s+is)\s*:?\s*(.*)",
                     re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def extract_answer(response: str) -> str:
    """The answer stated in a (possibly chain-of-thought) response."""
    matches = [m for m in _ANSWER.finditer(response) if m.group(1).strip()]
    if matches:
        answer = matches[-1].group(1).splitlines()[0]
    else:
        lines = [line for line in response.splitlines() if line.strip()]
        answer = lines[-1] if lines else ""
    answer = answer.strip().strip("*").strip()
    answer = re.sub(r"\.$", "", answer).strip()
    return answer.strip("\"'").strip()


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def sub_exact_match(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if not ref:
        return 0.0
    return float(f" {ref} " in f" {pred} ")


def golds_of(answer: str | Sequence[str]) -> list[str]:
    return [answer] if isinstance(answer, str) else [str(a) for a in answer]


def qa_scores(prediction: str, answer: str | Sequence[str]) -> dict[str, float]:
    """``em``, ``f1`` and ``subem`` of an extracted prediction, max over the gold answers."""
    golds = golds_of(answer)
    return {
        "em": max(exact_match(prediction, g) for g in golds),
        "f1": max(f1_score(prediction, g) for g in golds),
        "subem": max(sub_exact_match(prediction, g) for g in golds),
    }


def grade_qa(response: str, answer: str | Sequence[str]) -> dict:
    """Extract the answer and score it; ``correct`` is exact match."""
    extracted = extract_answer(response)
    scores = qa_scores(extracted, answer)
    return {"correct": scores["em"] == 1.0, "extracted": extracted, **scores}
