"""The second study's verdicts (docs/study2.md) on made-up results whose answers are known."""

from __future__ import annotations

import math

import pytest

from leaf.testbed.study import CONTRADICTED, INCONCLUSIVE, SUPPORTED
from leaf.testbed.study2 import (
    NOT_RUN,
    NOT_TESTED,
    SHIFTED,
    SIGNAL_NOTE,
    Across,
    across,
    kept_signal,
    restrict_seeds,
    verdicts2,
)

SEEDS = [0, 1, 2, 3, 4]
R1_SPLITS = ["test_id", "test_anti", "test_clean"]
SETS = {"kd": [], "leaf": ["grad_t10"], "unverified": ["grad_t10_unverified"],
        "planted": ["planted_set"], "planted_all": ["planted_all_set"]}
NOISE = [0.01, -0.01, 0.0, 0.02, -0.02]  # per seed: keeps the intervals from being points
UP = [0.04 + n for n in NOISE]       # clearly above 0
DOWN = [-0.04 + n for n in NOISE]    # clearly below 0
FLAT = [0.02, -0.02, 0.01, -0.01, 0.0]  # around 0


def results(diffs: dict[str, dict[str, list[float]]], splits=R1_SPLITS, teacher=None,
            signal=None, reliance=None, cf_rows=None, seeds=SEEDS) -> dict:
    """A results.json-shaped dict: ``diffs[variant][split]``, per seed, is the variant's
    accuracy minus kd's (kd: 0.5 + 0.01 * seed on every split); unnamed splits: +0."""
    n = len(seeds)
    variants = {v: {"sets": SETS.get(v, []), "hybrid_lambda": 1.0} for v in ("kd", *diffs)}
    for v in variants:
        if v.startswith("extra_kd"):
            variants[v] = {"sets": [], "extra_originals": "grad_t10"}
    models = {}
    for v in variants:
        for s in seeds:
            models[f"{v}-s{s}@data{s}"] = {
                sp: {"accuracy": 0.5 + 0.01 * s + (diffs.get(v, {}).get(sp) or [0] * n)[s],
                     "n": 1000} for sp in splits}
    rows = [{"key": v, "members": [f"{v}-s{s}@data{s}" for s in seeds],
             "counterfactual_rows": (cf_rows or {}).get(v, [60] * n)} for v in variants]
    rows.append({"key": "teacher", "members": [f"teacher@data{s}" for s in seeds],
                 "cells": {sp: {"mean": (teacher or {}).get(sp, 0.99)} for sp in splits}})
    counts = {f"data{s}": {"sets": {name: ({"signal": {"cf_kl_row": kl}} if kl is not None
                                           else {})
                                    for name, kl in (signal or {}).items()}} for s in seeds}
    attention = {"rows": [{"key": v, "members": [f"{v}-s{s}@data{s}" for s in seeds],
                           "reliance": {"follows_swap": {"values": vals}}}
                          for v, vals in (reliance or {}).items()]}
    return {"seeds": seeds, "replicates": [f"data{s}" for s in seeds], "splits": list(splits),
            "models": models, "variants": variants, "rows": rows, "counts": counts,
            "attention": attention}


def r1(**kw) -> dict:
    return results(kw.pop("diffs", {"leaf": {"test_anti": UP}, "planted": {"test_anti": UP},
                                     "planted_all": {"test_anti": UP},
                                     "extra_kd_random": {"test_anti": [0.0] * 5}}), **kw)


def t_by_hand(values: list[float]) -> tuple[float, float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = {4: 2.776, 3: 3.182, 2: 4.303}[n - 1] * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_r1_hypotheses_on_known_numbers():
    nl00 = r1(diffs={"leaf": {"test_anti": DOWN}, "planted": {"test_anti": UP},
                     "planted_all": {"test_anti": UP},
                     "extra_kd_random": {"test_anti": [d - f for d, f in zip(DOWN, FLAT)]}},
              reliance={"kd": [0.30, 0.32, 0.31, 0.29, 0.33],
                        "leaf": [0.20, 0.23, 0.20, 0.18, 0.22]})
    v = verdicts2({"r1-nl00": nl00}, pilot={"signal_check_passed": True})
    h = v["hypotheses"]
    assert h["R1-H1"]["verdict"] == SUPPORTED
    assert [p["verdict"] for p in h["R1-H1"]["parts"]] == [SUPPORTED, SUPPORTED]
    assert h["R1-H2"]["verdict"] == CONTRADICTED
    # leaf - extra_kd_random = FLAT per seed: mean 0, interval across 0
    assert h["R1-H4"]["verdict"] == INCONCLUSIVE
    assert h["R1-H4"]["parts"][0]["cell"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert h["R1-H5"]["verdict"] == SUPPORTED  # leaf follows the swapped distractor less
    assert h["R1-H5"]["parts"][0]["cell"]["mean"] == pytest.approx(-0.104)
    # the other runs are not there yet
    assert h["R1-H3"]["verdict"] == NOT_RUN and "r1-nl15" in h["R1-H3"]["reason"]
    assert all(h[k]["verdict"] == NOT_RUN for k in ("R2-H1", "R2-H2", "R2-H3"))
    assert v["missing"] == ["r1-nl03", "r1-nl15", "r2"]
    # every cell carries its detectable difference
    assert all(p["cell"]["detectable"] > 0 for k in ("R1-H1", "R1-H2", "R1-H4", "R1-H5")
               for p in h[k]["parts"])
    assert not any(h[k]["notes"] for k in h)  # the signal check passed
    # reported without a hypothesis: leaf - extra_kd_hard, unverified - leaf (absent here)
    assert v["reported"]["r1-nl00"] == []
    nl00["variants"]["extra_kd_hard"] = nl00["variants"]["extra_kd_random"]
    for s in SEEDS:
        nl00["models"][f"extra_kd_hard-s{s}@data{s}"] = nl00["models"][f"kd-s{s}@data{s}"]
    got = verdicts2({"r1-nl00": nl00})["reported"]["r1-nl00"]
    assert [(p["a"], p["b"], p["measure"]) for p in got] == [
        ("leaf", "extra_kd_hard", s) for s in R1_SPLITS]
    assert got[1]["cell"]["mean"] == pytest.approx(-0.04)


def test_a_missing_variant_or_measure_is_not_tested():
    res = r1()
    del res["variants"]["planted_all"]
    h = verdicts2({"r1-nl00": res})["hypotheses"]
    assert h["R1-H1"]["verdict"] == NOT_TESTED and "planted_all" in h["R1-H1"]["reason"]
    assert h["R1-H5"]["verdict"] == NOT_TESTED  # no reliance measured
    assert h["R1-H2"]["verdict"] == SUPPORTED


def test_dose_response_is_a_t_interval_over_seeds_of_differences_of_differences():
    a00 = [0.06, 0.09, 0.05, 0.07, 0.03]
    a15 = [0.03, 0.04, 0.01, 0.01, 0.01]  # per seed: a00 - a15 = 0.03 0.05 0.04 0.06 0.02
    base = {"planted": {"test_anti": UP}, "planted_all": {"test_anti": UP}}
    nl00 = r1(diffs={"leaf": {"test_anti": a00}, **base}, signal={"grad_t10": 1.5})
    nl15 = r1(diffs={"leaf": {"test_anti": a15}, **base}, signal={"grad_t10": 0.3})
    v = verdicts2({"r1-nl00": nl00, "r1-nl15": nl15})
    h3 = v["hypotheses"]["R1-H3"]
    leaf = h3["parts"][0]
    mean, lo, hi = t_by_hand([0.03, 0.05, 0.04, 0.06, 0.02])
    assert (leaf["a"], leaf["pairs"]) == ("leaf", 5)
    assert leaf["cell"]["mean"] == pytest.approx(mean)
    assert leaf["cell"]["lo"] == pytest.approx(lo, abs=1e-4)  # about 0.0204
    assert leaf["cell"]["hi"] == pytest.approx(hi, abs=1e-4)  # about 0.0596
    assert leaf["first_mean"] == pytest.approx(0.06) and leaf["second_mean"] == pytest.approx(0.02)
    # planted and planted_all gain the same at both doses: their difference is 0 -> inconclusive
    assert [p["verdict"] for p in h3["parts"]] == [SUPPORTED, INCONCLUSIVE, INCONCLUSIVE]
    assert h3["verdict"] == INCONCLUSIVE and h3["precondition"]["met"]


def test_dose_response_not_tested_when_the_dose_did_not_dose():
    nl00 = r1(signal={"grad_t10": 0.29})
    nl15 = r1(signal={"grad_t10": 0.31})
    h3 = verdicts2({"r1-nl00": nl00, "r1-nl15": nl15})["hypotheses"]["R1-H3"]
    assert h3["verdict"] == NOT_TESTED and "did not dose" in h3["reason"] and not h3["parts"]
    h3 = verdicts2({"r1-nl00": r1(), "r1-nl15": r1()})["hypotheses"]["R1-H3"]
    assert h3["verdict"] == NOT_TESTED and "no signal figures" in h3["reason"]


def test_dose_precondition_reads_seeds_0_to_4_only():
    # seeds 5-7 (the P rule's) carry far more signal; the precondition must not see them
    up8 = UP + [0.04] * 3
    nl00 = results({"leaf": {"test_anti": up8}, "planted": {"test_anti": up8},
                    "planted_all": {"test_anti": up8}}, seeds=list(range(8)),
                   signal={"grad_t10": 0.25})
    for s in (5, 6, 7):
        nl00["counts"][f"data{s}"]["sets"]["grad_t10"]["signal"]["cf_kl_row"] = 2.0
    h3 = verdicts2({"r1-nl00": nl00, "r1-nl15": r1(signal={"grad_t10": 0.3})}
                   )["hypotheses"]["R1-H3"]
    assert h3["verdict"] == NOT_TESTED and "0.250 at 0%" in h3["reason"]
    assert "did not dose" in h3["reason"]
    assert kept_signal(restrict_seeds(nl00, tuple(SEEDS)), "grad_t10") == pytest.approx(0.25)


def test_across_matches_members_by_seed_and_leaves_out_runs_without_counterfactuals():
    first = r1(diffs={"leaf": {"test_anti": [0.10, 0.20, 0.30, 0.40, 0.50]}},
               cf_rows={"leaf": [60, 0, 60, 60, 60]})
    second = r1(diffs={"leaf": {"test_anti": [0.0] * 5}})
    second["seeds"] = [0, 2, 3]  # seeds 1 and 4 missing from the second run
    second["replicates"] = ["data0", "data2", "data3"]
    got = across(first, second, Across("leaf", "kd", ("a", "test_anti"), ("b", "test_anti")))
    assert got["cell"]["seeds"] == [0, 2, 3] and got["pairs"] == 3
    mean, lo, hi = t_by_hand([0.10, 0.30, 0.40])
    assert (got["cell"]["mean"], got["cell"]["lo"]) == (pytest.approx(mean),
                                                        pytest.approx(lo, abs=1e-4))


def test_falsification_fires_on_the_oracle_at_or_below_kd():
    tie = [-0.01 + n / 4 for n in NOISE]  # mean -0.01, upper end below +0.03
    nl00 = r1(diffs={"leaf": {"test_anti": UP}, "planted": {"test_anti": tie},
                     "planted_all": {"test_anti": UP}})
    fired = verdicts2({"r1-nl00": nl00}, pilot={"signal_check_passed": True})["falsification"]
    assert fired["evaluated"] and fired["fired"]
    assert [a["arm"] for a in fired["arms"] if a["fires"]] == ["planted"]
    # the signal check failed: the clause reads only planted_all, which is well above kd
    v = verdicts2({"r1-nl00": nl00}, pilot={"signal_check_passed": False})
    assert v["falsification"]["evaluated"] and not v["falsification"]["fired"]
    assert [a["arm"] for a in v["falsification"]["arms"]] == ["planted_all"]
    # ... and every verdict on leaf in R1 carries the note; R1-H1 (no leaf) does not
    h = v["hypotheses"]
    assert SIGNAL_NOTE in h["R1-H2"]["notes"] and SIGNAL_NOTE in h["R1-H4"]["notes"]
    assert h["R1-H1"]["notes"] == []
    # a wide interval (upper end above +0.03) does not fire, nor a mean above 0
    wide = [-0.01 + 4 * n for n in NOISE]
    nl00 = r1(diffs={"planted": {"test_anti": wide}, "planted_all": {"test_anti": UP}})
    assert not verdicts2({"r1-nl00": nl00}, pilot={"signal_check_passed": True}
                         )["falsification"]["fired"]
    # without the pilot's decision the clause is not evaluated
    assert not verdicts2({"r1-nl00": nl00})["falsification"]["evaluated"]


def r2_results(teacher=None) -> dict:
    diffs = {"leaf": {"test_anti": [0.01] * 5, "test_anti_moved": [0.05 + n for n in NOISE],
                      "test_anti_two": [0.01] * 5, "test_anti_topic": DOWN},
             "planted": {s: UP for s in SHIFTED},
             "extra_kd_random": {"test_anti_moved": [0.0] * 5}}
    return results(diffs, splits=[*R1_SPLITS, *SHIFTED], teacher=teacher)


def test_r2_leaves_out_a_split_the_teacher_fails_and_reads_each_kept_split():
    v = verdicts2({"r2": r2_results(teacher={"test_anti_topic": 0.94})})
    h = v["hypotheses"]
    h1 = h["R2-H1"]
    assert h1["splits"]["test_anti_topic"]["kept"] is False
    assert "0.940 < 0.95" in h1["splits"]["test_anti_topic"]["reason"]
    assert [(p["a"], p["split"]) for p in h1["parts"]] == [
        ("planted", "test_anti_moved"), ("planted", "test_anti_two"),
        ("leaf", "test_anti_moved"), ("leaf", "test_anti_two")]
    # leaf - kd on test_anti_two is exactly +0.01 every seed: a point interval above 0
    assert h1["verdict"] == SUPPORTED
    h2 = h["R2-H2"]
    moved, two = h2["parts"]
    mean, lo, hi = t_by_hand([0.04 + n for n in NOISE])  # 0.05 + noise - 0.01
    assert moved["cell"]["mean"] == pytest.approx(mean)
    assert moved["cell"]["lo"] == pytest.approx(lo, abs=1e-4) and moved["verdict"] == SUPPORTED
    assert two["cell"]["mean"] == pytest.approx(0.0, abs=1e-12) and two["verdict"] == INCONCLUSIVE
    assert h2["verdict"] == INCONCLUSIVE
    # with the in-topic split kept, leaf - kd there is below 0: R2-H1 is contradicted
    h = verdicts2({"r2": r2_results()})["hypotheses"]
    assert h["R2-H1"]["verdict"] == CONTRADICTED
    # R2-H3: leaf - extra_kd_random > 0 on each shifted split
    assert [p["verdict"] for p in h["R2-H3"]["parts"]] == [SUPPORTED, SUPPORTED, CONTRADICTED]


def test_r2_not_tested_when_every_shifted_split_is_left_out():
    v = verdicts2({"r2": r2_results(teacher={s: 0.5 for s in SHIFTED})})
    assert all(v["hypotheses"][k]["verdict"] == NOT_TESTED for k in ("R2-H1", "R2-H2", "R2-H3"))
    assert "teacher accuracy 0.500" in v["hypotheses"]["R2-H1"]["reason"]


def test_p_rule_is_flagged_on_wide_primary_cells_only():
    wide = [0.04 + 4 * n for n in NOISE]  # sd 0.063: detectable far above 0.03
    h = verdicts2({"r1-nl00": r1(diffs={"leaf": {"test_anti": wide},
                                        "planted": {"test_anti": UP},
                                        "planted_all": {"test_anti": UP},
                                        "extra_kd_random": {"test_anti": wide}})})["hypotheses"]
    assert len(h["R1-H2"]["flags"]) == 1 and "P rule" in h["R1-H2"]["flags"][0]
    assert h["R1-H2"]["parts"][0]["cell"]["detectable"] > 0.03
    assert h["R1-H4"]["flags"] == []  # not primary: reported, not flagged
    # UP: sd 0.0158, half-width 0.0196, detectable about 0.028: no flag
    assert h["R1-H1"]["flags"] == []


def test_p_rule_reads_seeds_0_to_7_once_they_ran_and_only_for_that_cell():
    seeds = list(range(8))
    wide = [0.04 + 4 * n for n in NOISE] + [0.05, 0.03, 0.04]  # wide over seeds 0-4
    # R1-H4 (not primary): +0 over seeds 0-4, far off at seeds 5-7, which it must not read
    h4 = FLAT + [0.5, 0.5, 0.5]
    res = results({"leaf": {"test_anti": wide}, "planted": {"test_anti": UP + [0.04] * 3},
                   "planted_all": {"test_anti": UP + [0.04] * 3},
                   "extra_kd_random": {"test_anti": [w - f for w, f in zip(wide, h4)]}},
                  seeds=seeds)
    v = verdicts2({"r1-nl00": res}, pilot={"signal_check_passed": True})
    h2 = v["hypotheses"]["R1-H2"]
    assert h2["flags"] == [] and len(h2["p_read"]) == 1 and "seeds 0-7" in h2["p_read"][0]
    part = h2["parts"][0]
    assert part["pairs"] == 8 and part["seeds_read"] == seeds
    assert part["cell"]["mean"] == pytest.approx(sum(wide) / 8)
    h4_part = v["hypotheses"]["R1-H4"]["parts"][0]
    assert h4_part["pairs"] == 5 and h4_part["cell"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert v["hypotheses"]["R1-H4"]["verdict"] == INCONCLUSIVE
    # a narrow primary cell stays on seeds 0-4 even though seeds 5-7 are there
    h1 = v["hypotheses"]["R1-H1"]
    assert h1["p_read"] == [] and all(p["pairs"] == 5 for p in h1["parts"])
    # the same run without seeds 5-7 yet: flagged, read over 0-4
    five = results({"leaf": {"test_anti": wide[:5]}}, seeds=SEEDS)
    h2 = verdicts2({"r1-nl00": five})["hypotheses"]["R1-H2"]
    assert h2["p_read"] == [] and "have not run yet" in h2["flags"][0]


def test_item_paired_intervals_when_per_item_scores_are_given():
    res = r1()
    scores = {}  # per member and split: 100 items, the share right = the member's accuracy
    for member, splits in res["models"].items():
        for split, m in splits.items():
            right = round(m["accuracy"] * 100)
            scores[(member, split)] = {f"i{k}": float(k < right) for k in range(100)}
    v = verdicts2({"r1-nl00": res}, items={"r1-nl00": lambda m, sp: scores.get((m, sp))})
    cell = v["hypotheses"]["R1-H2"]["parts"][0]["cell"]
    assert cell["interval"] == "bootstrap: seeds x items" and cell["detectable"] > 0
    assert cell["mean"] == pytest.approx(0.04)
    # results.json's stored item-paired difference is used when no scores are given
    res["differences"] = [{"key": "leaf", "baseline": "kd", "pairs": 5,
                           "runs_without_counterfactuals": 0,
                           "cells": {"test_anti": {**cell, "interval": "stored"}}}]
    got = verdicts2({"r1-nl00": res})["hypotheses"]["R1-H2"]["parts"][0]["cell"]
    assert got["interval"] == "stored"


def test_r2_config_is_r1_with_the_shift():
    """R2's config copies R1's committed settings; only the teacher, the student, the name and
    the shifted splits differ (docs/study2.md, "Regime R2")."""
    from pathlib import Path

    import yaml

    from leaf.pipeline.config import load_config

    here = Path(__file__).resolve().parents[1] / "configs" / "study2"
    r1_raw = yaml.safe_load((here / "word_problem_r1.yaml").read_text())
    r2_raw = yaml.safe_load((here / "word_problem_r2.yaml").read_text())
    sizes = r2_raw["data"]["sizes"]
    assert {s: sizes.pop(s) for s in SHIFTED} == {s: 1000 for s in SHIFTED}
    assert r2_raw.pop("teacher") == "testbed:word_problem/teacher_varied"
    assert r2_raw.pop("student") == r1_raw.pop("teacher").replace("teacher", "student_nl00")
    assert r1_raw.pop("student") == "testbed:word_problem/student_nl00"
    assert (r1_raw.pop("name"), r2_raw.pop("name")) == ("study2-word_problem-r1",
                                                        "study2-word_problem-r2")
    r1_raw.pop("description"), r2_raw.pop("description")
    assert r2_raw == r1_raw
    for name in ("word_problem_r1.yaml", "word_problem_r2.yaml"):
        cfg = load_config(here / name)
        assert set(cfg.distill.variants) >= {"kd", "leaf", "unverified", "planted",
                                             "planted_all", "extra_kd_hard", "extra_kd_random"}
        assert len(cfg.seeds) >= 5
    assert set(SHIFTED) <= set(load_config(here / "word_problem_r2.yaml").test_splits())


def test_reliance_is_read_from_the_attention_stage_summary():
    """R1-H5 reads ``follows_swap`` per member as leaf.pipeline.attention_stage summarises it."""
    from leaf.pipeline.attention_stage import summarise_attention
    from test_reliance import _model

    follows = {"kd": [[True, True, False, False]] * 5,   # 0.5 every seed
               "leaf": [[True, False, False, False], [False] * 4, [True, False, False, False],
                        [False] * 4, [True, False, False, False]]}  # 0.25, 0, ...
    att = {"models": [_model(k, f"{k}-s{s}@data{s}", follows[k][s])
                      for k in follows for s in SEEDS]}
    res = r1()
    res["attention"] = summarise_attention(att)
    h5 = verdicts2({"r1-nl00": res})["hypotheses"]["R1-H5"]
    cell = h5["parts"][0]["cell"]
    assert cell["values"] == pytest.approx([-0.25, -0.5, -0.25, -0.5, -0.25])
    assert h5["verdict"] == SUPPORTED and h5["parts"][0]["pairs"] == 5
