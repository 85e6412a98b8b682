"""The units that teacher and student saliency are compared on (tokens or words).

Scores are compared per unit of the scored text (the instruction, or a response prefix):

- **tokens**, when both models split that text into the same character spans (same tokenizer,
  or tokenizers that happen to agree on this text). Tokens whose spans overlap (a byte-level
  tokenizer can give two tokens the span of one multi-byte character) are merged into one unit.
- **words** otherwise. A word is a maximal run of non-whitespace characters (``\\S+``), so
  whitespace belongs to no word and a word's span never starts or ends with a space.

Pooling a token's scores onto words: a token's share of word w is the fraction of the token's
non-whitespace characters that fall inside w (1 for a token inside one word; a token spanning two
words is split by character count; a whitespace-only token belongs to no unit). Then

    g(w)   = sqrt( sum_t share(t, w) * g_t^2 )     (saliency: the L2 norm of the gradient with
                                                    respect to all of w's token embeddings)
    nll(w) = sum_t share(t, w) * nll_t              (-log p(w), by the chain rule)

Merged token units pool the same way with share 1.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence

Span = tuple[int, int]
_WORD = re.compile(r"\S+")


def word_spans(text: str) -> list[Span]:
    """``[start, end)`` of every maximal non-whitespace run of ``text``."""
    return [(m.start(), m.end()) for m in _WORD.finditer(text)]


def merge_token_spans(spans: Sequence[Span]) -> list[Span]:
    """Token spans in order, with overlapping (or identical) spans merged."""
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and s < out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _shares(
    text: str, token: Span, units: Sequence[Span], ends: list[int], words: bool
) -> list[tuple[int, float]]:
    """``(unit index, share)`` for the units a token overlaps; ``units`` sorted, disjoint."""
    s, e = token

    def weight(a: int, b: int) -> int:
        return sum(not c.isspace() for c in text[a:b]) if words else b - a

    total = weight(s, e)
    if total == 0:
        return []
    shares = []
    u = bisect.bisect_right(ends, s)  # first unit ending after the token starts
    while u < len(units) and units[u][0] < e:
        lo, hi = max(s, units[u][0]), min(e, units[u][1])
        w = weight(lo, hi) if hi > lo else 0
        if w:
            shares.append((u, w / total))
        u += 1
    return shares


def pool(
    text: str,
    token_spans: Sequence[Span],
    saliency: Sequence[float],
    nll: Sequence[float] | None,
    units: Sequence[Span],
    words: bool,
) -> tuple[list[float], list[float] | None]:
    """Pool per-token saliency (L2) and NLL (sum) onto ``units`` (see the module docstring)."""
    sq = [0.0] * len(units)
    nl = [0.0] * len(units) if nll is not None else None
    ends = [e for _, e in units]
    for t, span in enumerate(token_spans):
        for u, share in _shares(text, span, units, ends, words):
            sq[u] += share * float(saliency[t]) ** 2
            if nl is not None:
                nl[u] += share * float(nll[t])
    return [math.sqrt(v) for v in sq], nl


def same_segmentation(a: Sequence[Span], b: Sequence[Span]) -> bool:
    """True when two tokenisations cut the text at the same character spans."""
    return merge_token_spans(a) == merge_token_spans(b)
