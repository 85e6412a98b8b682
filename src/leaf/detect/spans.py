"""Confounder candidates, confounding spans A_1..A_k, and their removal (paper section 4.2.1).

:func:`confounders` is the one place that decides which units are candidates and which runs
of them form spans; ``leaf prune``, ``leaf report`` and the testbed's detection metrics all
call it.

A unit i (a token, or a word when the tokenizers differ) is a *candidate confounder* when
``norm(d_i) <= t`` for the threshold t of :func:`leaf.detect.thresholds.threshold`, with two
guards:

- a unit whose text is whitespace only (or empty) is never a candidate (as in the released
  code);
- when the normalised differences have no spread (all equal, e.g. teacher and student agree
  everywhere, or one unit), nothing stands out and no unit is a candidate. Without this guard
  min-max normalisation maps everything to 0 and ``0 <= tau`` would flag the whole text.

**Spans.** Candidates are grouped into maximal runs in *character* space: two candidates belong
to the same span when the text between them is whitespace only (this bridges whitespace units
and the gaps tokenizers leave between words). A span runs from its first unit's start to its
last unit's end, so whitespace inside it is removed with it.

**Removal and whitespace at the cut.** :func:`cut` may widen a span by horizontal whitespace
(spaces and tabs) only, never across a newline and never into other text:

1. if the span is followed by whitespace or the end of the text, the spaces/tabs right before
   it are removed too (``"a 15 b" -> "a b"``, ``"x 15\\ny" -> "x\\ny"``);
2. otherwise, if it starts the text or a line and is followed by spaces/tabs, those are
   removed (``"15 apples" -> "apples"``);
3. otherwise the span is removed exactly (``"rumor: 15." -> "rumor: ."``).

The widened span is what ``pruned`` records, so ``text[:s] + text[e:]`` is exactly the pruned
text and every character outside the recorded spans is kept byte-for-byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from leaf.detect.thresholds import DEFAULT_QUANTILE, DEFAULT_TAU, threshold

Span = tuple[int, int]
STRATEGIES = ("span", "collective")
_HSPACE = " \t"
_SPREAD_EPS = 1e-12


def is_blank(text: str, unit: Sequence[int]) -> bool:
    """True when the unit's text is empty or whitespace only (never a confounder)."""
    return not text[unit[0]:unit[1]].strip()


def blank_mask(text: str, units: Sequence[Sequence[int]]) -> list[bool]:
    return [is_blank(text, u) for u in units]


def gradient_candidates(
    diff: Sequence[float],
    blank: Sequence[bool],
    mode: str = "fixed",
    tau: float = DEFAULT_TAU,
    quantile: float = DEFAULT_QUANTILE,
) -> tuple[list[bool], float]:
    """The gradient rule: unit i is a candidate when ``norm(d_i) <= t`` and it is not blank.

    ``t`` is computed over every unit's difference (blank units included, as the differences
    were normalised over them). Returns the flags and ``t`` (``-inf`` when the differences have
    no spread, in which case nothing is flagged).
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0 or float(d.max() - d.min()) <= _SPREAD_EPS:
        return [False] * d.size, float("-inf")
    t = threshold(d, mode=mode, tau=tau, quantile=quantile)
    return [bool(v <= t) and not b for v, b in zip(d, blank)], t


def build_spans(text: str, units: Sequence[Sequence[int]], flags: Sequence[bool]) -> list[Span]:
    """Maximal runs A_1..A_k of flagged units, as ``[start, end)`` character spans of ``text``.

    Consecutive flagged units join one span when only whitespace lies between them.
    """
    spans: list[list[int]] = []
    for (s, e), flag in zip(units, flags):
        if not flag:
            continue
        if spans and (s <= spans[-1][1] or not text[spans[-1][1]:s].strip()):
            spans[-1][1] = max(spans[-1][1], e)
        else:
            spans.append([s, e])
    return [(s, e) for s, e in spans]


@dataclass(frozen=True)
class Confounders:
    """What the rule found in one scored text (see :func:`confounders`)."""

    flags: tuple[bool, ...]
    """Per unit: True when unit i is a candidate confounder."""
    spans: tuple[Span, ...]
    """The maximal runs A_1..A_k as ``[start, end)`` character spans, before :func:`cut`."""
    threshold: float
    """The cut-off t (``-inf`` when the differences have no spread and nothing is flagged)."""


def confounders(
    text: str,
    units: Sequence[Sequence[int]],
    diff: Sequence[float],
    mode: str = "fixed",
    tau: float = DEFAULT_TAU,
    quantile: float = DEFAULT_QUANTILE,
) -> Confounders:
    """The confounder rule for one scored text: candidate units and the spans they form.

    ``units[i]`` is unit i's ``[start, end)`` in ``text`` and ``diff[i]`` its normalised
    difference ``norm(d_i)`` (low: the student leans on it, the teacher does not). Unit i is a
    candidate when ``norm(d_i) <= t`` (t from ``mode`` / ``tau`` / ``quantile``, see
    :func:`leaf.detect.thresholds.threshold`) and its text is not whitespace only; nothing is a
    candidate when the differences have no spread. Candidates with only whitespace between
    them form one span A_j. Every consumer of the rule goes through here so that what
    ``leaf prune`` removes, what ``leaf report`` shows and what the detection metrics score
    cannot drift apart.
    """
    if len(units) != len(diff):
        raise ValueError(f"{len(units)} units but {len(diff)} differences")
    flags, t = gradient_candidates(diff, blank_mask(text, units), mode, tau, quantile)
    return Confounders(tuple(flags), tuple(build_spans(text, units, flags)), t)


def cut(text: str, span: Span) -> Span:
    """Widen ``span`` by the horizontal whitespace rule of the module docstring."""
    s, e = span
    lead = s
    while lead > 0 and text[lead - 1] in _HSPACE:
        lead -= 1
    trail = e
    while trail < len(text) and text[trail] in _HSPACE:
        trail += 1
    if lead < s and (e == len(text) or text[e].isspace()):
        return lead, e
    if trail > e and (s == 0 or text[s - 1] in "\r\n"):
        return s, trail
    return s, e


def remove_spans(text: str, spans: Sequence[Span]) -> str:
    """``text`` without the given (sorted, non-overlapping) spans; the rest is kept verbatim."""
    out, pos = [], 0
    for s, e in sorted(spans):
        if s < pos:
            raise ValueError(f"overlapping spans at {s}")
        out.append(text[pos:s])
        pos = e
    out.append(text[pos:])
    return "".join(out)


def prune_plans(text: str, spans: Sequence[Span], strategy: str = "span") -> list[list[Span]]:
    """The removals to make: one per span (``X \\ A_j``) or one with all spans (``X \\ A``).

    Each plan is the list of widened spans (:func:`cut`) that one counterfactual removes.
    No spans give no plans.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    cuts = [cut(text, sp) for sp in spans]
    if not cuts:
        return []
    return [[c] for c in cuts] if strategy == "span" else [cuts]
