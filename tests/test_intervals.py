"""The confidence intervals shared by results, report and study (``leaf.intervals``)."""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pytest

from leaf.intervals import (
    bootstrap_interval,
    detectable_difference,
    few_seeds_factor,
    hierarchical_bootstrap,
    interval,
    mean_ci,
    paired_difference,
    t_interval,
    t_quantile_975,
    wilson_interval,
)


def test_mean_ci_t_interval():
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and ci["n"] == 3
    assert ci["half_width"] == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert ci["low"] == pytest.approx(2.0 - ci["half_width"])
    xs = [0.61, 0.58, 0.66, 0.70, 0.55]
    ci = mean_ci(xs)
    assert ci["half_width"] == pytest.approx(2.776 * statistics.stdev(xs) / math.sqrt(5))
    assert mean_ci([0.5, 0.5, 0.5])["half_width"] == 0.0
    one = mean_ci([0.7])
    assert one["mean"] == 0.7 and math.isnan(one["low"]) and math.isnan(one["half_width"])
    assert mean_ci([0.2, math.nan, 0.4])["n"] == 2


def test_t_quantile_table_and_interpolation():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(2) == 4.303
    assert t_quantile_975(30) == 2.042
    values = [t_quantile_975(d) for d in range(1, 500)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # decreasing in df
    assert 2.021 > t_quantile_975(50) > 2.000
    assert t_quantile_975(50) == pytest.approx(2.009, abs=0.002)  # the exact value is 2.0086
    assert t_quantile_975(10**6) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_t_interval_is_mean_ci_as_a_tuple():
    ci = mean_ci([0.61, 0.58, 0.66])
    assert t_interval([0.61, 0.58, 0.66]) == (ci["mean"], ci["low"], ci["high"])


def test_wilson_interval_of_a_proportion():
    lo, hi = wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0.0, 10)[0] == 0.0 and wilson_interval(1.0, 10)[1] == 1.0
    assert wilson_interval(0.3, 0) == (0.0, 1.0)


def test_interval_t_over_runs_else_wilson_over_samples():
    several = interval([0.9, 1.0, 1.0], 50)
    assert several["interval"] == "t over seeds" and several["hi"] == 1.0  # clipped to [0, 1]
    one = interval([0.5], 100)
    assert one["interval"] == "Wilson over samples"
    assert (one["lo"], one["hi"]) == wilson_interval(0.5, 100)
    assert math.isnan(interval([0.5], 0)["lo"])


def test_paired_difference_names_the_group_by_its_label():
    results = {"seeds": [0, 1], "replicates": ["data0"], "splits": ["test"], "rows": [],
               "models": {"a-s0@data0": {"test": {"accuracy": 0.7}},
                          "a-s1@data0": {"test": {"accuracy": 0.8}},
                          "b-s0@data0": {"test": {"accuracy": 0.5}},
                          "b-s1@data0": {"test": {"accuracy": 0.5}}}}
    d = paired_difference(results, "a", "b", labels={"a": "Variant A"})
    assert d["label"] == "Variant A" and d["pairs"] == 2
    assert d["cells"]["test"]["values"] == pytest.approx([0.2, 0.3])
    assert paired_difference(results, "a", "b")["label"] == "a"


# --- the hierarchical bootstrap -------------------------------------------------------------

def test_bootstrap_is_seeded_and_levels_add_spread():
    rng = np.random.default_rng(0)
    units = [rng.integers(0, 2, 40).astype(float) for _ in range(3)]
    a = hierarchical_bootstrap(units, shared_items=False, resamples=500, seed=7)
    assert np.array_equal(a, hierarchical_bootstrap(units, shared_items=False, resamples=500,
                                                    seed=7))
    assert a.shape == (500,) and a.mean() == pytest.approx(np.mean([u.mean() for u in units]),
                                                           abs=0.02)
    seeds_only = hierarchical_bootstrap(units, shared_items=False, resamples=500, levels="seeds")
    assert set(np.round(seeds_only, 9)) <= {round(float(np.mean([units[i].mean() for i in c])), 9)
                                            for c in np.ndindex(3, 3, 3)}
    assert a.var() > seeds_only.var()  # items add their own noise


def test_shared_items_take_one_item_resample_for_every_seed():
    # every seed answers every item identically: resampling seeds changes nothing, and one
    # shared item resample keeps the seeds equal, so the spread is that of items alone
    item = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    units = [item, item, item]
    shared = hierarchical_bootstrap(units, shared_items=True, resamples=4000, seed=1)
    one = hierarchical_bootstrap([item], shared_items=True, resamples=4000, seed=1)
    assert shared.std() == pytest.approx(one.std(), rel=0.1)
    own = hierarchical_bootstrap(units, shared_items=False, resamples=4000, seed=1)
    assert own.std() < 0.75 * shared.std()  # separate resamples would average the noise away
    with pytest.raises(ValueError):
        hierarchical_bootstrap([item, item[:3]], shared_items=True)


def test_four_items_three_seeds_never_give_a_zero_width_interval():
    # the case that printed +0.000 [+0.000, +0.000]: both variants answer the 4 shared items
    # alike at every seed
    same = [np.zeros(4)] * 3
    c = bootstrap_interval(same, shared_items=True, kind="difference")
    assert c["mean"] == 0.0 and c["lo"] < -0.2 and c["hi"] > 0.2
    assert c["interval"] == "bootstrap: seeds x items" and c["resamples"] == 2000
    assert c["items"] == [4, 4, 4] and c["seeds"] == 3
    assert c["detectable"] == pytest.approx(detectable_difference(c["half_width"]))
    acc = bootstrap_interval([np.array([1.0, 0, 0, 0])] * 3, shared_items=True)
    assert 0.0 <= acc["lo"] < 0.25 < acc["hi"] <= 1.0


def test_detectable_difference_is_about_1_43_half_widths():
    assert detectable_difference(0.1) == pytest.approx(0.1 * (1.959964 + 0.841621) / 1.959964)
    assert detectable_difference(0.1) == pytest.approx(0.143, abs=1e-3)


def test_few_seeds_factor_is_one_for_item_noise_and_t_for_seed_noise():
    assert few_seeds_factor(0.0, 1.0, 5, 1000) == pytest.approx(1.0, abs=0.01)
    assert few_seeds_factor(1.0, 0.0, 3, 1000) == pytest.approx(
        t_quantile_975(2) / 1.959964 * math.sqrt(1.5))
    assert few_seeds_factor(1.0, 1.0, 1, 10) == 1.0


def _draw(rng, seeds, items, shared, seed_spread, delta):
    """Per-item differences of two variants with a known mean difference ``delta``: each
    item has its own difficulty (shared across seeds or drawn per seed), each variant and
    seed its own offset (uniform in +-seed_spread: seed-to-seed noise), and each answer is a
    Bernoulli draw (item noise)."""
    difficulty = rng.uniform(0.25, 0.75, items)
    units = []
    for _ in range(seeds):
        q = difficulty if shared else rng.uniform(0.25, 0.75, items)
        off_a, off_b = rng.uniform(-seed_spread, seed_spread, 2)
        a = rng.random(items) < q + delta / 2 + off_a
        b = rng.random(items) < q - delta / 2 + off_b
        units.append(a.astype(float) - b)
    return units


def coverage(seeds, items, shared, seed_spread, reps, resamples, delta=0.1) -> float:
    rng = np.random.default_rng(2026)
    hits = 0
    for r in range(reps):
        c = bootstrap_interval(_draw(rng, seeds, items, shared, seed_spread, delta),
                               shared_items=shared, kind="difference", resamples=resamples,
                               seed=r)
        hits += c["lo"] <= delta <= c["hi"]
    return hits / reps


# (seeds, items per seed, shared items, seed-to-seed spread): testbed-like (own splits), user
# files (shared items), a single seed
DESIGNS = [(5, 200, False, 0.1), (3, 100, False, 0.15), (3, 50, True, 0.1), (1, 100, True, 0.0)]


@pytest.mark.parametrize("design", DESIGNS)
def test_bootstrap_covers_a_known_difference(design):
    """Fast version: 300 simulated runs per design, 500 resamples each (about 1-2 s a design
    on one core); at 95% nominal the coverage must reach 93% (300 draws: a 95% coverage
    would fall under 93% by chance about 5% of the time; the draws are seeded)."""
    t0 = time.monotonic()
    assert coverage(*design, reps=300, resamples=500) >= 0.93
    assert time.monotonic() - t0 < 20


@pytest.mark.slow
@pytest.mark.parametrize("design", DESIGNS + [(10, 50, False, 0.1), (5, 100, True, 0.1)])
def test_bootstrap_covers_a_known_difference_at_scale(design):
    """2000 simulated runs per design, 2000 resamples each (the pipeline's setting): the
    coverage estimate has a standard error of about 0.5 percentage points."""
    assert coverage(*design, reps=2000, resamples=2000) >= 0.93
