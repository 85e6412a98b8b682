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
from typing import Any

from leaf.detect.baselines import select_units
from leaf.detect.scores_io import scored_text
from leaf.detect.scoring import DEFAULT_QUANTILE, DEFAULT_TAU
from leaf.detect.spans import blank_mask, build_spans, prune_plans, remove_spans


@dataclass(frozen=True)
class PruneOptions:
    """How candidates are chosen and removed (the ``leaf prune`` flags)."""

    threshold_mode: str = "fixed"  # fixed (paper tau) | quantile (released code) | iqr
    tau: float = DEFAULT_TAU
    quantile: float = DEFAULT_QUANTILE
    strategy: str = "span"  # span (paper) | collective (ablation)
    masking: str = "gradient"  # gradient (LeaF) | random | ppl (baselines)
    seed: int = 0


def original_row(sample: dict[str, Any]) -> dict[str, Any]:
    return {**sample, "origin_id": sample["id"], "kind": "original", "level": "instruction",
            "pruned": [], "verified": None}


def counterfactuals_for_row(
    sample: dict[str, Any], score: dict[str, Any], opts: PruneOptions
) -> list[dict[str, Any]]:
    """The counterfactual rows that one scores row (one scored text) yields."""
    text = scored_text(sample, score)
    units = score["units"]
    flags, t = select_units(
        score, blank_mask(text, units), masking=opts.masking, mode=opts.threshold_mode,
        tau=opts.tau, quantile=opts.quantile, seed=opts.seed,
    )
    plans = prune_plans(text, build_spans(text, units, flags), opts.strategy)
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


def sample_rows(
    sample: dict[str, Any], scores: Sequence[dict[str, Any]], opts: PruneOptions
) -> list[dict[str, Any]]:
    """The original row of ``sample`` followed by all its counterfactual rows."""
    rows = [original_row(sample)]
    for score in scores:
        rows.extend(counterfactuals_for_row(sample, score, opts))
    return rows
