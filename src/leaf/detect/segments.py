"""Split a gold response into K segments for response-level detection (paper section 3.3).

The response ``y`` is cut at K - 1 boundaries ``b_1 < ... < b_{K-1}`` (character indices).
For boundary k the scored context is the prefix ``y[:b_k]`` and the target is ``y[b_k:]``;
``b_k`` is the ``prefix_end`` of the scores and counterfactual rows of segment k.

The rule, in order of preference (the first kind that offers at least K - 1 usable cuts wins):

1. **steps**: the start of a step marker, ``Step 3``/``step 3:``/``### Step 3`` (case-insensitive,
   at the start of the text or after whitespace); the whitespace before it stays in the prefix;
2. **paragraphs**: just after a run of blank lines (``\\n\\n``);
3. **lines**: just after a newline;
4. **tokens** (fallback): equal token counts, cutting at the start of a token (with the student's
   tokenizer when one is given, otherwise at whitespace-separated words). With
   ``word_aligned`` (detection compares teacher and student on words because their tokenizers
   split the response differently) only tokens that start a word may be cut at, so no boundary
   falls inside a word.

Every cut is then moved forward over whitespace to the next visible character, so whitespace
at a boundary always stays at the end of the prefix and the target starts with visible text; two
cuts separated only by whitespace become one. A cut is usable when text remains on both sides.
Among the usable cuts of the chosen kind, boundary k is the one nearest (in characters) to
``k * len(y) / K``, taken left to right so that boundaries increase and every segment holds
visible text. A response too short to split yields fewer boundaries (possibly none).
"""

from __future__ import annotations

import re

DEFAULT_SEGMENTS = 2
_STEP = re.compile(r"(?:^|(?<=\s))(?:#+[ \t]*)?step[ \t]*\d+", re.IGNORECASE)
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_LINE = re.compile(r"\n")


_VISIBLE = re.compile(r"\S")


def _snap(text: str, cuts: list[int]) -> list[int]:
    """Cuts moved to the next visible character, deduplicated, with text on both sides."""
    out = set()
    for c in cuts:
        m = _VISIBLE.search(text, c)
        if m and text[: m.start()].strip():
            out.add(m.start())
    return sorted(out)


def _step_cuts(text: str) -> list[int]:
    return [m.start() for m in _STEP.finditer(text)]


def _paragraph_cuts(text: str) -> list[int]:
    return [m.end() for m in _PARAGRAPH.finditer(text)]


def _line_cuts(text: str) -> list[int]:
    return [m.end() for m in _LINE.finditer(text)]


def _token_cuts(text: str, k: int, tokenizer=None, word_aligned: bool = False) -> list[int]:
    if tokenizer is not None:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = [s for s, e in enc["offset_mapping"] if e > s]
        if word_aligned:  # the first visible character of a token that starts a word
            starts = [m.start() for m in (_VISIBLE.search(text, s) for s in starts)
                      if m and (m.start() == 0 or text[m.start() - 1].isspace())]
    else:
        starts = [m.start() for m in re.finditer(r"\S+", text)]
    starts = sorted(set(starts))
    n = len(starts)
    if n < k:
        return []
    return [starts[(j * n) // k] for j in range(1, k)]


def _pick(cuts: list[int], text: str, k: int) -> list[int]:
    """K - 1 increasing cuts nearest to the equal-length targets."""
    chosen: list[int] = []
    lo = 0
    for j in range(1, k):
        need_after = k - 1 - j  # cuts still to place after this one
        window = cuts[lo : len(cuts) - need_after]
        if not window:
            break
        target = j * len(text) / k
        best = min(range(len(window)), key=lambda i: (abs(window[i] - target), i))
        chosen.append(window[best])
        lo += best + 1
    return chosen


def segment_boundaries(
    response: str, k: int = DEFAULT_SEGMENTS, tokenizer=None, word_aligned: bool = False
) -> list[int]:
    """The ``prefix_end`` character indices that split ``response`` into ``k`` segments
    (``word_aligned``: never inside a word, see the module docstring)."""
    if k < 2:
        raise ValueError(f"the number of segments must be at least 2, got {k}")
    for finder in (_step_cuts, _paragraph_cuts, _line_cuts):
        usable = _snap(response, finder(response))
        if len(usable) >= k - 1:
            return _pick(usable, response, k)
    return _pick(_snap(response, _token_cuts(response, k, tokenizer, word_aligned)), response,
                 k)
