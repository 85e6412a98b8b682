"""Detection quality against the planted spans.

A sample's planted confounder has a *misleading* part (the decoy number) and a *distractor*
sentence around it (``sample["planted"]``). Given the character spans a detector flagged in the
instruction (the confounder spans of :func:`leaf.detect.spans.confounders` from the scores, or
the spans ``leaf prune`` removed):

- **span recall**: the share of planted misleading spans that overlap at least one flagged
  span. Finding the number is what matters: removing it is what frees the student.
- **token precision**: the share of flagged characters that fall inside a distractor sentence.
  Whitespace is not counted (a byte-level token such as ``" rumor"`` carries its leading space),
  so flagging exactly the sentence's words gives 1.0. Flags in samples without a distractor
  count as outside.

Both are micro-averaged over samples. Intervals over seeds come from :mod:`leaf.intervals`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from leaf.detect.spans import confounders
from leaf.detect.thresholds import DEFAULT_QUANTILE, DEFAULT_TAU

Span = Sequence[int]  # [start, end) in characters


def merge_spans(spans: Iterable[Span]) -> list[tuple[int, int]]:
    """Sorted union of ``[start, end)`` spans (touching spans are joined; empty ones dropped)."""
    out: list[list[int]] = []
    for s, e in sorted((int(s), int(e)) for s, e in spans if e > s):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def overlaps(a: Span, b: Span) -> bool:
    """True when ``[a0, a1)`` and ``[b0, b1)`` share at least one character."""
    return max(a[0], b[0]) < min(a[1], b[1])


def _content_chars(text: str, spans: Iterable[Span]) -> set[int]:
    return {i for s, e in merge_spans(spans) for i in range(s, min(e, len(text)))
            if not text[i].isspace()}


def sample_counts(text: str, planted: Mapping, flagged: Iterable[Span]) -> dict[str, int]:
    """Counts for one sample: misleading spans planted/found, flagged chars inside/total."""
    flagged = merge_spans(flagged)
    misleading = planted.get("misleading", [])
    found = sum(any(overlaps(m, f) for f in flagged) for m in misleading)
    flagged_chars = _content_chars(text, flagged)
    inside = flagged_chars & _content_chars(text, planted.get("distractor", []))
    return {"planted": len(misleading), "found": found,
            "flagged_chars": len(flagged_chars), "inside_chars": len(inside)}


def detection_quality(
    samples: Iterable[Mapping], flagged_by_id: Mapping[str, Iterable[Span]]
) -> dict[str, float | int]:
    """Span recall and token precision over the samples that have an entry in ``flagged_by_id``.

    ``flagged_by_id`` maps a sample id to the instruction spans flagged for it; give an empty
    list for a scored sample where nothing was flagged (it counts as a miss). Samples without
    an entry were not scored and are left out. A rate with an empty denominator is NaN.
    """
    total = {"planted": 0, "found": 0, "flagged_chars": 0, "inside_chars": 0, "samples": 0}
    for sample in samples:
        if sample["id"] not in flagged_by_id:
            continue
        counts = sample_counts(sample["instruction"], sample.get("planted", {}),
                               flagged_by_id[sample["id"]])
        for key, value in counts.items():
            total[key] += value
        total["samples"] += 1
    return {
        "span_recall": _rate(total["found"], total["planted"]),
        "token_precision": _rate(total["inside_chars"], total["flagged_chars"]),
        "n_samples": total["samples"],
        "n_planted": total["planted"],
        "n_flagged_chars": total["flagged_chars"],
    }


def _rate(num: int, den: int) -> float:
    return num / den if den else math.nan


def flagged_from_scores(
    rows: Iterable[Mapping],
    samples: Mapping[str, Mapping],
    mode: str = "fixed",
    tau: float = DEFAULT_TAU,
    quantile: float = DEFAULT_QUANTILE,
) -> dict[str, list[list[int]]]:
    """Instruction-level ``scores.jsonl`` rows -> confounder spans A_1..A_k per sample id.

    The spans are those of :func:`leaf.detect.spans.confounders` (the rule ``leaf prune``
    uses, before its whitespace widening): ``samples`` maps an id to its sample, whose
    ``instruction`` the rule needs (whitespace units are never flagged, spans bridge
    whitespace). A scored sample with nothing flagged gets an empty list.
    """
    out: dict[str, list[list[int]]] = {}
    for row in rows:
        if row.get("level", "instruction") != "instruction":
            continue
        if row["id"] not in samples:
            raise ValueError(f"scores row for {row['id']!r}: no such sample (its text is needed)")
        rule = confounders(samples[row["id"]]["instruction"], row["units"], row["diff"],
                           mode, tau, quantile)
        out.setdefault(row["id"], []).extend(list(sp) for sp in rule.spans)
    return out


def flagged_from_counterfactuals(
    rows: Iterable[Mapping],
    verified_only: bool = False,
    masking: str | None = None,
    strategy: str | None = None,
) -> dict[str, list[list[int]]]:
    """Instruction-level ``counterfactuals.jsonl`` rows -> pruned spans per original id.

    Every ``original`` row gives its id an entry (empty when nothing was pruned), so samples
    that produced no counterfactual count as misses. ``masking`` ("gradient" | "ppl" |
    "random") and ``strategy`` ("span" | "collective") keep only rows of that rule when given.
    """
    out: dict[str, list[list[int]]] = {}
    for row in rows:
        origin = row.get("origin_id", row["id"])
        out.setdefault(origin, [])
        if row.get("kind") != "counterfactual" or row.get("level") != "instruction":
            continue
        if verified_only and row.get("verified") is not True:
            continue
        if masking is not None and row.get("masking") != masking:
            continue
        if strategy is not None and row.get("strategy") != strategy:
            continue
        out[origin].extend(list(s) for s in row.get("pruned", []))
    return out
