"""Confidence intervals, the statistics a run's results, the report and the testbed study share.

- :func:`mean_ci`: mean and two-sided 95% Student-t interval,
  ``mean +- t_{0.975, n-1} s / sqrt(n)`` (:func:`t_interval` gives the same as a tuple);
- :func:`wilson_interval`: the 95% Wilson interval of a proportion seen on ``n`` samples;
- :func:`interval`: a proportion's mean and interval, Student-t over runs when there are several,
  else Wilson over one run's samples;
- :func:`paired_difference`: group ``a`` minus group ``b`` of a ``results.json``, paired by seed.

Pure functions of numbers and dicts: no file is read and nothing above this module is imported,
so the pipeline, the report and the testbed can all lean on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# Two-sided 95% quantiles t_{0.975, df} of Student's t distribution.
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}


def t_quantile_975(df: int) -> float:
    """``t_{0.975, df}``: exact table to 30 degrees of freedom, then linear in ``1/df``."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df in _T975:
        return _T975[df]
    knots = [(k, v) for k, v in sorted(_T975.items()) if k >= 30] + [(math.inf, 1.960)]
    for (d0, t0), (d1, t1) in zip(knots, knots[1:]):
        if d0 < df < d1:
            x, x0, x1 = 1 / df, 1 / d0, 1 / d1 if d1 != math.inf else 0.0
            return t0 + (t1 - t0) * (x - x0) / (x1 - x0)
    raise AssertionError("unreachable")


def mean_ci(values: Sequence[float]) -> dict[str, float | int]:
    """Mean and 95% t-interval ``mean +- t_{0.975, n-1} * s / sqrt(n)`` (NaN bounds if n < 2).

    ``s`` is the sample standard deviation (n - 1 in the denominator). NaN values are dropped.
    """
    xs = [float(v) for v in values if not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "half_width": math.nan,
                "n": 0}
    mean = sum(xs) / n
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "half_width": math.nan, "n": 1}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "n": n}


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and 95% Student-t interval of :func:`mean_ci`."""
    ci = mean_ci(values)
    return ci["mean"], ci["low"], ci["high"]


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a proportion ``p`` observed on ``n`` samples."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(values: list[float], n: int) -> dict[str, Any]:
    """Mean and 95% interval of a proportion: Student-t over replicates when >= 2 (clipped to
    [0, 1], where a proportion lives), else Wilson over the ``n`` samples of one run."""
    if len(values) >= 2:
        mean, lo, hi = t_interval(values)
        lo, hi = max(0.0, lo), min(1.0, hi)
        kind = "t over seeds"
    else:
        mean = values[0]
        lo, hi = wilson_interval(mean, n) if n else (math.nan, math.nan)
        kind = "Wilson over samples"
    return {"mean": mean, "lo": lo, "hi": hi, "values": values, "interval": kind}


def seed_members(results: Mapping[str, Any], key: str) -> dict[int, str]:
    """Seed -> the member (``key-s<seed>@<data key>``) of a distilled group."""
    seeds, reps = results["seeds"], results["replicates"]
    dkeys = reps if len(reps) == len(seeds) else [reps[0]] * len(seeds)
    return {s: f"{key}-s{s}@{d}" for s, d in zip(seeds, dkeys)}


def paired_difference(results: Mapping[str, Any], a: str, b: str,
                      values: Callable[[str, str], float | None] | None = None,
                      labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Group ``a`` minus group ``b``, paired by seed: the two runs of a seed trained on the same
    data replicate and originals and were tested on the same splits, so their difference
    removes what the replicate shares. Per split: mean and 95% Student-t interval over the
    seeds (no interval with one). A run of a group that adds counterfactual rows but trained on
    none is counted (``runs_without_counterfactuals``) and its pair left out: it only repeats
    the baseline. ``values(member, split)`` overrides where the compared number comes from
    (default: the member's accuracy); ``labels`` names the groups (default: their keys)."""
    rows = {r["key"]: r for r in results["rows"]}
    variants = results.get("variants") or {}
    get = values or (lambda m, sp: results["models"].get(m, {}).get(sp, {}).get("accuracy"))
    empty: set[int] = set()
    for key in (a, b):
        spec = variants.get(key) or {}
        counts = (rows.get(key) or {}).get("counterfactual_rows")
        if (spec.get("sets") or spec.get("extra_originals")) and counts is not None:
            empty |= {s for s, c in zip(results["seeds"], counts) if c == 0}
    ma, mb = seed_members(results, a), seed_members(results, b)
    seeds = [s for s in results["seeds"] if s not in empty]
    cells = {}
    for split in results["splits"]:
        diffs = [get(ma[s], split) - get(mb[s], split) for s in seeds
                 if get(ma[s], split) is not None and get(mb[s], split) is not None]
        if len(diffs) >= 2:
            mean, lo, hi = t_interval(diffs)
            cells[split] = {"mean": mean, "lo": lo, "hi": hi, "values": diffs,
                            "interval": "t over paired seeds"}
        elif diffs:
            cells[split] = {"mean": diffs[0], "lo": math.nan, "hi": math.nan, "values": diffs,
                            "interval": "one pair: no interval"}
    pairs = max((len(c["values"]) for c in cells.values()), default=0)
    return {"key": a, "label": (labels or {}).get(a, a), "baseline": b, "pairs": pairs,
            "runs_without_counterfactuals": len(empty), "cells": cells}
