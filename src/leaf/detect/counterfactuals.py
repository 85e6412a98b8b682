"""Rows of ``counterfactuals.jsonl``: each sample's original row and its counterfactuals.

For a sample with id ``I``:

- one ``original`` row: the sample's fields plus ``origin_id = I``, ``kind = "original"``,
  ``level = "instruction"``, ``pruned = []``, ``verified = None``;
- instruction level, one row per removal ``X \\ A_j`` with ``id = "I#i<j>"``: ``instruction``
  is the pruned instruction;
- response level (segment k, prefix ``y_<k = response[:prefix_end]``), ``id = "I#r<k>.<j>"``:
  ``instruction`` unchanged, ``prefix`` the pruned prefix, ``target = response[prefix_end:]``.

j counts removals from 0 in text order (collective pruning has only j = 0). Counterfactual
rows also carry ``kind = "counterfactual"``, ``level``, ``pruned`` (the ``[start, end)`` spans
removed, in the original text of the field), ``verified = None`` until checked, ``masking``,
``strategy`` and ``threshold`` (the gradient rule's cut-off t for that text, which also sets
the unit count of the ``random`` and ``ppl`` baselines).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from leaf.detect.baselines import baseline_mask
from leaf.detect.scores_file import scored_text
from leaf.detect.spans import (
    Span,
    blank_mask,
    build_spans,
    confounders,
    prune_plans,
    remove_spans,
)
from leaf.detect.thresholds import DEFAULT_QUANTILE, DEFAULT_TAU
from leaf.settings import Checked, setting


@dataclass(frozen=True)
class PruneOptions(Checked):
    """How candidates are chosen and removed (:func:`leaf.stages.prune`, ``leaf prune``)."""

    threshold_mode: Literal["fixed", "quantile", "iqr"] = setting(
        "fixed", help="fixed: the paper's tau; quantile: the released code's rule (value at "
                      "position int(q*n) of the sorted differences, capped at 0.5); iqr: "
                      "Q1 - 1.5 IQR")
    tau: float = setting(DEFAULT_TAU, ge=0.0, le=1.0,
                         help="cut-off of the fixed rule (differences are min-max normalised)")
    quantile: float = setting(DEFAULT_QUANTILE, ge=0.0, lt=1.0, help="q of the quantile rule")
    strategy: Literal["span", "collective"] = setting(
        "span", help="span: one counterfactual per span (paper); collective: all spans at once")
    masking: Literal["gradient", "random", "ppl", "planted"] = setting(
        "gradient", help="gradient: LeaF's rule; random / ppl: baselines that mask as many units "
                         "at random or by highest student NLL; planted: an oracle for testbed "
                         "data that removes each row's planted misleading spans (no scores)")
    seed: int = setting(0, help="seed of random masking")


def original_row(sample: dict[str, Any]) -> dict[str, Any]:
    return {**sample, "origin_id": sample["id"], "kind": "original", "level": "instruction",
            "pruned": [], "verified": None}


def masked_spans(
    text: str, score: dict[str, Any], opts: PruneOptions
) -> tuple[list[Span], float]:
    """The spans ``opts.masking`` selects in one scored text, and the gradient rule's cut-off t.

    ``gradient`` takes the rule's spans as they are; a baseline masks as many units as the
    rule flags, chosen its own way, and they go through the same span grouping.
    """
    units = score["units"]
    rule = confounders(text, units, score["diff"], opts.threshold_mode, opts.tau, opts.quantile)
    if opts.masking == "gradient":
        return list(rule.spans), rule.threshold
    flags = baseline_mask(score, blank_mask(text, units), sum(rule.flags),
                          masking=opts.masking, seed=opts.seed)
    return build_spans(text, units, flags), rule.threshold


def counterfactuals_for_row(
    sample: dict[str, Any], score: dict[str, Any], opts: PruneOptions
) -> list[dict[str, Any]]:
    """The counterfactual rows that one scores row (one scored text) yields."""
    text = scored_text(sample, score)
    spans, t = masked_spans(text, score, opts)
    plans = prune_plans(text, spans, opts.strategy)
    rows = []
    for j, plan in enumerate(plans):
        row = {**sample, "origin_id": sample["id"], "kind": "counterfactual",
               "level": score["level"], "pruned": [list(sp) for sp in plan], "verified": None,
               "masking": opts.masking, "strategy": opts.strategy,
               "threshold": t if math.isfinite(t) else None}
        pruned = remove_spans(text, plan)
        if score["level"] == "instruction":
            row.update(id=f"{sample['id']}#i{j}", instruction=pruned)
        else:
            k = score["segment"]
            row.update(id=f"{sample['id']}#r{k}.{j}", prefix=pruned,
                       target=sample["response"][score["prefix_end"]:])
        rows.append(row)
    return rows


def planted_rows(sample: dict[str, Any], opts: PruneOptions) -> list[dict[str, Any]]:
    """The oracle's counterfactuals: the sample's planted ``misleading`` spans (testbed rows)
    removed from the instruction, one span at a time or all at once, cut like every other rule's
    spans. A sample without planted misleading spans (a clean row) yields none."""
    planted = sample.get("planted")
    if not isinstance(planted, dict):
        raise ValueError(f"sample {sample['id']!r} has no `planted` spans; masking 'planted' "
                         "needs testbed data")
    text = sample["instruction"]
    spans = sorted((int(s), int(e)) for s, e in planted.get("misleading") or [])
    rows = []
    for j, plan in enumerate(prune_plans(text, spans, opts.strategy)):
        rows.append({**sample, "id": f"{sample['id']}#i{j}", "origin_id": sample["id"],
                     "kind": "counterfactual", "level": "instruction",
                     "instruction": remove_spans(text, plan),
                     "pruned": [list(sp) for sp in plan], "verified": None,
                     "masking": opts.masking, "strategy": opts.strategy, "threshold": None})
    return rows


def sample_rows(
    sample: dict[str, Any], scores: Sequence[dict[str, Any]] | None, opts: PruneOptions
) -> list[dict[str, Any]]:
    """The original row of ``sample`` followed by all its counterfactual rows.

    ``scores`` are the sample's scores rows; with ``masking="planted"`` they only say whether
    the sample was scored (``None``: every sample is pruned), the spans come from the sample.
    """
    rows = [original_row(sample)]
    if opts.masking == "planted":
        if scores is None or scores:
            rows.extend(planted_rows(sample, opts))
        return rows
    for score in scores or []:
        rows.extend(counterfactuals_for_row(sample, score, opts))
    return rows
