"""Confidence intervals, the statistics a run's results, the report and the testbed study share.

- :func:`mean_ci`: mean and two-sided 95% Student-t interval,
  ``mean +- t_{0.975, n-1} s / sqrt(n)`` (:func:`t_interval` gives the same as a tuple);
- :func:`wilson_interval`: the 95% Wilson interval of a proportion seen on ``n`` samples;
- :func:`interval`: a proportion's mean and interval, Student-t over runs when there are several,
  else Wilson over one run's samples;
- :func:`paired_difference`: group ``a`` minus group ``b`` of a ``results.json``, paired by seed
  (and by test item when per-item scores are given);
- :func:`hierarchical_bootstrap` / :func:`bootstrap_interval`: the 95% interval of a run's
  accuracy or paired difference over seeds, then test items (shared across seeds, or each
  seed's own), with a small-seed widening (:func:`few_seeds_factor`) and a floor for a few
  items; :func:`detectable_difference`: the smallest difference the runs would show four times
  out of five. docs/intervals.md has the method and its measured coverage.

Pure functions of numbers and dicts (numpy for the resampling, seeded): no file is read and
nothing above this module is imported, so the pipeline, the report and the testbed can all
lean on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

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


def item_differences(pairs: Sequence[tuple[str, str]], split: str,
                     items: Callable[[str, str], Mapping[str, float] | None],
                     ) -> tuple[list[list[float]], bool] | None:
    """Per seed, the per-item differences ``a - b`` of each ``(a, b)`` member pair on the items
    both were scored on, and whether the seeds share their items (one data replicate, the
    ``@`` part of the members); None when a member has no per-item scores."""
    scores = [(items(ma, split), items(mb, split)) for ma, mb in pairs]
    if not scores or any(x is None or y is None for x, y in scores):
        return None
    shared = len({m.rsplit("@", 1)[-1] for pair in pairs for m in pair}) == 1
    if shared:
        common = set.intersection(*(set(x) & set(y) for x, y in scores))
        ids = [sorted(common)] * len(scores)
    else:
        ids = [sorted(set(x) & set(y)) for x, y in scores]
    if any(not i for i in ids):
        return None
    return [[x[k] - y[k] for k in i] for (x, y), i in zip(scores, ids)], shared


def seed_members(results: Mapping[str, Any], key: str) -> dict[int, str]:
    """Seed -> the member (``key-s<seed>@<data key>``) of a distilled group."""
    seeds, reps = results["seeds"], results["replicates"]
    dkeys = reps if len(reps) == len(seeds) else [reps[0]] * len(seeds)
    return {s: f"{key}-s{s}@{d}" for s, d in zip(seeds, dkeys)}


def seeds_without_counterfactuals(results: Mapping[str, Any], *keys: str) -> set[int]:
    """Seeds at which a group of ``keys`` that adds counterfactual rows trained on none (such a
    run only repeats the baseline, so its pairs are left out)."""
    rows = {r["key"]: r for r in results.get("rows") or []}
    variants = results.get("variants") or {}
    empty: set[int] = set()
    for key in keys:
        spec = variants.get(key) or {}
        counts = (rows.get(key) or {}).get("counterfactual_rows")
        if (spec.get("sets") or spec.get("extra_originals")) and counts is not None:
            empty |= {s for s, c in zip(results["seeds"], counts) if c == 0}
    return empty


def paired_difference(results: Mapping[str, Any], a: str, b: str,
                      values: Callable[[str, str], float | None] | None = None,
                      labels: Mapping[str, str] | None = None,
                      items: Callable[[str, str], Mapping[str, float] | None] | None = None,
                      ) -> dict[str, Any]:
    """Group ``a`` minus group ``b``, paired by seed: the two runs of a seed trained on the same
    data replicate and originals and were tested on the same splits, so their difference
    removes what the replicate shares. Per split: mean and 95% interval. With ``items``
    (``items(member, split)``: test item id -> that member's score on it, or None) for every
    pair, the interval is :func:`bootstrap_interval` over seeds and items of the per-item
    differences, paired by seed and item (the items are shared when every seed used the same
    data replicate); otherwise Student-t over the seeds' differences (no interval with one).
    A run of a group that adds counterfactual rows but trained on none is counted
    (``runs_without_counterfactuals``) and its pair left out: it only repeats the baseline.
    ``values(member, split)`` overrides where the compared number comes from (default: the
    member's accuracy); ``labels`` names the groups (default: their keys)."""
    get = values or (lambda m, sp: results["models"].get(m, {}).get(sp, {}).get("accuracy"))
    empty = seeds_without_counterfactuals(results, a, b)
    ma, mb = seed_members(results, a), seed_members(results, b)
    seeds = [s for s in results["seeds"] if s not in empty]
    cells = {}
    for split in results["splits"]:
        diffs = [get(ma[s], split) - get(mb[s], split) for s in seeds
                 if get(ma[s], split) is not None and get(mb[s], split) is not None]
        per_item = item_differences([(ma[s], mb[s]) for s in seeds], split, items) \
            if items and diffs else None
        if per_item:
            units, shared = per_item
            cells[split] = {**bootstrap_interval(units, shared_items=shared,
                                                 kind="difference"), "values": diffs}
        elif len(diffs) >= 2:
            mean, lo, hi = t_interval(diffs)
            cells[split] = {"mean": mean, "lo": lo, "hi": hi, "values": diffs,
                            "interval": "t over paired seeds"}
        elif diffs:
            cells[split] = {"mean": diffs[0], "lo": math.nan, "hi": math.nan, "values": diffs,
                            "interval": "one pair: no interval"}
    pairs = max((len(c["values"]) for c in cells.values()), default=0)
    return {"key": a, "label": (labels or {}).get(a, a), "baseline": b, "pairs": pairs,
            "runs_without_counterfactuals": len(empty), "cells": cells}


# --- hierarchical bootstrap: seeds, then test items ---------------------------------------

#: Resamples drawn by :func:`bootstrap_interval` unless told otherwise.
RESAMPLES = 2000
#: ``z_{0.975} + z_{0.80}``: a true difference this many standard errors from 0 is found by a
#: two-sided 5% test four times out of five.
_Z975, _Z80 = 1.959964, 0.841621


def _item_resample_means(values: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``draws`` resamples (with replacement) of ``values``: the counts of the distinct
    values are multinomial, so a 0/1 or -1/0/+1 column costs a few numbers per draw."""
    uniq, counts = np.unique(values, return_counts=True)
    picks = rng.multinomial(len(values), counts / len(values), size=draws)
    return picks @ uniq / len(values)


def hierarchical_bootstrap(units: Sequence[Sequence[float]], *, shared_items: bool,
                           resamples: int = RESAMPLES, seed: int = 0,
                           levels: str = "seeds x items") -> np.ndarray:
    """Bootstrap means of ``units`` (one list of per-item values per seed): each resample draws
    the seeds with replacement, then the items.

    ``shared_items``: every seed was tested on the same items, in the same order (a test file
    given by the user); one resample of item indices is applied to every seed, so an item that
    is hard for all seeds stays hard in the resample (a crossed design). Otherwise each seed has
    its own items (testbed replicates draw their own splits) and each drawn seed gets its own
    resample of its items. The statistic is the mean over seeds of each seed's item mean, as
    the point estimate. ``levels``: ``"seeds x items"``, or ``"seeds"`` / ``"items"`` to
    resample one level only (used to tell which source dominates). Returns ``resamples`` means.
    """
    arrays = [np.asarray(u, dtype=float) for u in units]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("every seed needs at least one item")
    rng = np.random.default_rng(seed)
    n_seeds = len(arrays)
    pick_seeds = "seeds" in levels
    pick_items = "items" in levels
    seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds)) if pick_seeds else \
        np.broadcast_to(np.arange(n_seeds), (resamples, n_seeds))
    if shared_items:
        if len({a.size for a in arrays}) != 1:
            raise ValueError("shared items: every seed needs the same number of items")
        table = np.stack(arrays)  # seeds x items
        n_items = table.shape[1]
        out = np.empty(resamples)
        step = max(1, 4_000_000 // (n_items * n_seeds))  # bounded memory for long test sets
        for start in range(0, resamples, step):
            stop = min(resamples, start + step)
            if pick_items:
                items = rng.integers(0, n_items, size=(stop - start, n_items))
                per_seed = table[:, items].mean(axis=2).T  # resamples x seeds
            else:
                per_seed = np.broadcast_to(table.mean(axis=1), (stop - start, n_seeds))
            chosen = np.take_along_axis(per_seed, seeds[start:stop], axis=1)
            out[start:stop] = chosen.mean(axis=1)
        return out
    per_slot = np.empty((resamples, n_seeds))
    for s, a in enumerate(arrays):
        hit = seeds == s
        k = int(hit.sum())
        if k:
            per_slot[hit] = _item_resample_means(a, k, rng) if pick_items else a.mean()
    return per_slot.mean(axis=1)


def _floor(units: Sequence[np.ndarray], shared_items: bool, kind: str) -> tuple[float, float]:
    """An interval that ignores the seeds but not the discreteness of a few items: Wilson for a
    proportion, Agresti-Min-style (half a pseudo-count in each of the four paired cells, so
    one more discordant pair each way) for a paired difference of 0/1 scores; on the number of
    independent items (one seed's items when they are shared). It keeps an interval from
    collapsing to a point when every resample agrees (all items right, or no pair differing),
    which says nothing about the items not tested."""
    pooled = np.concatenate([np.asarray(u, dtype=float) for u in units])
    n = len(units[0]) if shared_items else pooled.size
    if kind == "proportion":
        return wilson_interval(float(pooled.mean()), n)
    up = float((pooled > 0).mean()) * n + 0.5  # variant right, baseline wrong
    down = float((pooled < 0).mean()) * n + 0.5
    m = n + 2.0
    diff = (up - down) / m
    half = _Z975 * math.sqrt(max(0.0, (up + down) / m - diff * diff) / m)
    return max(-1.0, diff - half), min(1.0, diff + half)


def few_seeds_factor(seed_var: float, item_var: float, n_seeds: int, n_items: int) -> float:
    """How much to widen a percentile interval for having few seeds (>= 1).

    A bootstrap over ``S`` seeds sees ``(S - 1) / S`` of their variance and, like a normal
    quantile, ignores that this variance is itself estimated from ``S`` values. The
    seed-level variance is scaled back by ``S / (S - 1)`` and the quantile becomes Student's t
    with Welch-Satterthwaite degrees of freedom, ``(V_s + V_i)^2 / (V_s^2 / (S - 1) +
    V_i^2 / (n - 1))`` (``V_s``, ``V_i``: the variances of seed-only and item-only
    resamples); the interval grows by ``t_{0.975, df} / z_{0.975} * sqrt((V_s S / (S - 1) +
    V_i) / (V_s + V_i))``. With the item noise dominant this is about 1; with the seeds
    dominant it approaches the Student-t interval over seeds.
    """
    if n_seeds < 2 or seed_var + item_var <= 0:
        return 1.0
    seeds = seed_var * n_seeds / (n_seeds - 1)
    total = seeds + item_var
    df = total ** 2 / (seeds ** 2 / (n_seeds - 1) + item_var ** 2 / max(1, n_items - 1))
    return t_quantile_975(max(1, math.floor(df))) / _Z975 * math.sqrt(
        total / (seed_var + item_var))


def detectable_difference(half_width: float) -> float:
    """The smallest detectable difference: the true difference these runs would show (its 95%
    interval excluding 0) four times out of five, ``(z_{0.975} + z_{0.80}) * SE`` with the
    standard error read off the interval, ``SE = half_width / z_{0.975}``; about 1.43 times the
    half-width. A difference smaller than this can easily go unseen."""
    return (_Z975 + _Z80) * half_width / _Z975


def bootstrap_interval(units: Sequence[Sequence[float]], *, shared_items: bool,
                       kind: str = "proportion", resamples: int = RESAMPLES,
                       seed: int = 0) -> dict[str, Any]:
    """Mean and 95% interval of per-item scores over seeds and items (the percentile interval
    of :func:`hierarchical_bootstrap`), widened where needed to hold the item-only interval of
    :func:`_floor`. ``kind``: ``"proportion"`` (scores in [0, 1]: accuracy) or
    ``"difference"`` (variant minus baseline per item, paired by seed and item).

    Returns ``mean``, ``lo``, ``hi``, ``half_width`` (half the interval's width),
    ``detectable`` (:func:`detectable_difference`), ``interval`` (``"bootstrap: seeds x
    items"``, or ``"bootstrap: items"`` with one seed), ``resamples``, ``seeds``, ``items``
    (per seed), ``shared_items`` and ``dominant``: the source of most of the spread
    (``"seeds"`` or ``"items"``; None with one seed, whose seed-to-seed spread is unmeasured).
    """
    arrays = [np.asarray(u, dtype=float) for u in units]
    means = hierarchical_bootstrap(arrays, shared_items=shared_items, resamples=resamples,
                                   seed=seed)
    mean = float(np.mean([a.mean() for a in arrays]))
    lo, hi = (float(x) for x in np.quantile(means, [0.025, 0.975]))
    dominant = None
    if len(arrays) > 1:
        by_seeds = hierarchical_bootstrap(arrays, shared_items=shared_items,
                                          resamples=resamples, seed=seed + 1,
                                          levels="seeds").var()
        by_items = hierarchical_bootstrap(arrays, shared_items=shared_items,
                                          resamples=resamples, seed=seed + 2,
                                          levels="items").var()
        dominant = "seeds" if by_seeds > by_items else "items"
        grow = few_seeds_factor(by_seeds, by_items, len(arrays), min(a.size for a in arrays))
        lo, hi = mean - grow * (mean - lo), mean + grow * (hi - mean)
    flo, fhi = _floor(arrays, shared_items, kind)
    lo, hi = min(lo, flo), max(hi, fhi)
    if kind == "proportion":
        lo, hi = max(0.0, lo), min(1.0, hi)
    half = (hi - lo) / 2
    return {"mean": mean, "lo": lo, "hi": hi, "half_width": half,
            "detectable": detectable_difference(half),
            "interval": "bootstrap: seeds x items" if len(arrays) > 1 else "bootstrap: items",
            "resamples": resamples, "seeds": len(arrays),
            "items": [int(a.size) for a in arrays], "shared_items": shared_items,
            "dominant": dominant}
