"""The study's verdict rule (docs/study.md) on made-up results whose answers are known."""

from __future__ import annotations

import math

import pytest

from leaf.intervals import paired_difference
from leaf.testbed.study import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_CONTRADICTED,
    SUPPORTED,
    combine,
    verdicts,
    word,
)

SEEDS = [0, 1, 2]
SPLITS = ["test_anti", "test_clean"]


def _results(acc: dict[str, list[tuple[float, float]]], cf_rows: dict[str, list[int]],
             recall: dict[str, list[float]], share: dict[str, list[float]]) -> dict:
    models = {f"{k}-s{s}@data{s}": dict(zip(SPLITS, ({"accuracy": a, "n": 200} for a in v[s])))
              for k, v in acc.items() for s in SEEDS}
    variants = {k: {"sets": [] if k == "kd" else ["x"], "hybrid_lambda": 0.5} for k in acc}
    rows = [{"key": k, "members": [f"{k}-s{s}@data{s}" for s in SEEDS],
             "counterfactual_rows": cf_rows.get(k, [5, 5, 5])} for k in acc]
    detection = {r: {"replicates": {f"data{s}": {"span_recall": v[s]} for s in SEEDS}}
                 for r, v in recall.items()}
    attention = {"rows": [{"key": k, "members": [f"{k}-s{s}@data{s}" for s in SEEDS],
                           "share": {"values": v}} for k, v in share.items()]}
    return {"seeds": SEEDS, "replicates": [f"data{s}" for s in SEEDS], "splits": SPLITS,
            "models": models, "variants": variants, "rows": rows, "detection": detection,
            "attention": attention}


def test_word_and_combine_follow_the_written_rule():
    up = {"mean": 0.1, "lo": 0.05, "hi": 0.15}
    down = {"mean": -0.1, "lo": -0.15, "hi": -0.05}
    zero = {"mean": 0.0, "lo": -0.05, "hi": 0.05}
    assert [word(c, ">") for c in (up, down, zero)] == [SUPPORTED, CONTRADICTED, INCONCLUSIVE]
    assert [word(c, "<") for c in (up, down, zero)] == [CONTRADICTED, SUPPORTED, INCONCLUSIVE]
    assert [word(c, ">=") for c in (up, down, zero)] == [SUPPORTED, CONTRADICTED,
                                                          NOT_CONTRADICTED]
    assert word({"mean": 0.1, "lo": math.nan, "hi": math.nan}, ">") == INCONCLUSIVE
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([SUPPORTED, CONTRADICTED]) == CONTRADICTED
    assert combine([SUPPORTED, NOT_CONTRADICTED]) == NOT_CONTRADICTED


def test_verdicts_on_known_numbers():
    res = _results(
        acc={"kd": [(0.50, 0.90), (0.40, 0.80), (0.60, 0.85)],
             "leaf": [(0.60, 0.91), (0.52, 0.79), (0.69, 0.86)],   # +0.10 anti, ~0 clean
             "ppl": [(0.45, 0.9), (0.35, 0.8), (0.55, 0.85)],
             "random": [(0.45, 0.9), (0.36, 0.8), (0.54, 0.85)],
             "collective": [(0.70, 0.9), (0.61, 0.8), (0.80, 0.85)]},
        cf_rows={"random": [3, 0, 3]},
        recall={"gradient": [0.8, 0.7, 0.9], "ppl": [0.1, 0.2, 0.1], "random": [0.1, 0.1, 0.2]},
        share={"kd": [0.14, 0.15, 0.13], "leaf": [0.12, 0.13, 0.11]})
    v = verdicts(res)
    h1 = v["hypotheses"]["H1"]
    assert [p["verdict"] for p in h1["parts"]] == [SUPPORTED, INCONCLUSIVE]
    assert h1["verdict"] == INCONCLUSIVE
    h2 = {(p["a"], p["b"], p["measure"]): p for p in v["hypotheses"]["H2"]["parts"]}
    assert h2[("gradient", "ppl", "span_recall")]["verdict"] == SUPPORTED
    assert h2[("ppl", "random", "span_recall")]["verdict"] == INCONCLUSIVE
    assert h2[("leaf", "ppl", "test_anti")]["verdict"] == SUPPORTED
    # the random run without counterfactuals (seed 1) is left out of its pairs
    assert h2[("ppl", "random", "test_anti")]["pairs"] == 2
    assert h2[("ppl", "random", "test_anti")]["runs_without_counterfactuals"] == 1
    assert v["hypotheses"]["H3"]["verdict"] == CONTRADICTED  # collective is better here
    h4 = v["hypotheses"]["H4"]
    assert h4["verdict"] == SUPPORTED and h4["parts"][0]["cell"]["mean"] == pytest.approx(-0.02)
    assert v["controls"] == []  # no extra_kd / planted variants in this run


def test_paired_difference_pairs_runs_of_one_seed():
    res = _results(acc={"kd": [(0.5, 0.9), (0.4, 0.8), (0.6, 0.85)],
                        "leaf": [(0.6, 0.9), (0.5, 0.8), (0.7, 0.85)]},
                   cf_rows={}, recall={}, share={})
    d = paired_difference(res, "leaf", "kd")
    anti = d["cells"]["test_anti"]
    # unpaired, the two groups' intervals overlap widely; paired, every seed gains 0.1
    assert anti["values"] == pytest.approx([0.1, 0.1, 0.1])
    assert anti["lo"] == pytest.approx(0.1) and anti["hi"] == pytest.approx(0.1)


def test_removes_planted_needs_every_misleading_span_covered():
    from leaf.pipeline.results import removes_planted

    row = {"level": "instruction", "planted": {"misleading": [[32, 34]]}}
    assert removes_planted({**row, "pruned": [[31, 34]]})          # number and its space
    assert not removes_planted({**row, "pruned": [[33, 34]]})      # one digit of "15"
    assert not removes_planted({**row, "pruned": [[10, 12]]})
    assert not removes_planted({**row, "level": "response", "pruned": [[31, 34]]})
    assert not removes_planted({"level": "instruction", "pruned": [[0, 3]]})  # no planted spans


def test_every_study_config_loads_and_names_what_the_hypotheses_compare():
    from pathlib import Path

    from leaf.pipeline.config import load_config
    from leaf.testbed.study import CONTROLS, HYPOTHESES
    from leaf.testbed.tasks import FAMILIES

    configs = sorted((Path(__file__).resolve().parents[1] / "configs" / "study").glob("*.yaml"))
    assert [c.stem for c in configs] == sorted(FAMILIES)
    parts = [p for _, ps in HYPOTHESES.values() for p in ps] + [p for _, p in CONTROLS]
    for path in configs:
        cfg = load_config(path)
        known = set(cfg.distill.variants) | set(cfg.detection.rules)
        assert {name for p in parts for name in (p.a, p.b)} <= known, path.name
        assert len(cfg.seeds) >= 5 and cfg.data.testbed == path.stem
        # every counterfactual set a variant trains on is verified the same way
        used = {s for v in cfg.distill.variants.values() for s in v.sets}
        assert all(cfg.counterfactuals[s].verify for s in used), path.name
