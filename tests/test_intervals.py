"""The confidence intervals shared by results, report and study (``leaf.intervals``)."""

from __future__ import annotations

import math
import statistics

import pytest

from leaf.intervals import (
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
