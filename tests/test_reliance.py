"""Causal reliance on the planted distractor: the interventions, the measure on a shipped
testbed student, and its place in attention.json, results and the tables."""

from __future__ import annotations

import pytest

from leaf.evaluate.reliance import FIELDS, measure_reliance, reliance_items
from leaf.models import resolve_model_name
from leaf.pipeline.attention_stage import summarise_attention
from leaf.pipeline.tables import attention_rows
from leaf.testbed.tasks import make_split


def test_items_swap_and_remove_the_planted_number():
    rows = make_split("digit_sum", "test_anti", 20, seed=1)
    items = reliance_items(rows)
    assert len(items) == 20
    for it, r in zip(items, rows, strict=True):
        (s, e), = r["planted"]["misleading"]
        assert it.original == r["instruction"] and str(it.value) == r["instruction"][s:e]
        assert it.swap == r["instruction"][:s] + str(it.swap_value) + r["instruction"][e:]
        assert it.swap_value not in (it.value, int(r["answer"]))
        assert str(it.value) not in it.removed[s - 2:s + 2] and "  " not in it.removed
    # no distractor, or one that agrees with the answer: nothing to measure
    clean = make_split("digit_sum", "test_clean", 5, seed=1)
    agree = [{**r, "distractor_value": int(r["answer"])} for r in rows[:3]]
    assert reliance_items(clean) == [] and reliance_items(agree) == []


def test_measure_on_the_shipped_student():
    items = reliance_items(make_split("digit_sum", "test_anti", 12, seed=2))
    got = measure_reliance(resolve_model_name("testbed:digit_sum/student"), items,
                           max_new_tokens=24)
    assert got["n_items"] == 12 and len(got["per_item"]) == 12
    for f in FIELDS:
        assert got[f] == pytest.approx(sum(float(p[f]) for p in got["per_item"]) / 12)
    # the shipped student is misled by the number and recovers when it is gone
    assert got["correct_removed"] >= got["correct"] and got["dlogp_removed"] > 0


def _model(key, member, follows):
    per = [{"follows": False, "follows_swap": f, "correct": not f, "correct_swap": not f,
            "correct_removed": True, "dlogp_swap": -1.0 * f, "dlogp_removed": 0.5}
           for f in follows]
    rel = {"n_items": len(per), "per_item": per,
           **{k: sum(float(p[k]) for p in per) / len(per) for k in FIELDS}}
    return {"key": key, "member": member, "label": key, "n_items": len(per), "mean": 0.1,
            "uniform": 0.1, "per_item": [{"share": 0.1, "uniform": 0.1}], "per_layer": [0.1],
            "reliance": rel}


def test_summary_and_table_lead_with_reliance():
    att = {"split": "test_anti", "spans": "planted", "planted_part": "distractor",
           "models": [_model("student", "student@data0", [True, False, False, False]),
                      _model("kd", "kd-s0@data0", [True, True, False, False]),
                      _model("kd", "kd-s1@data1", [False, False, False, False])]}
    summary = summarise_attention(att)
    rows = {r["key"]: r for r in summary["rows"]}
    assert rows["kd"]["reliance"]["follows_swap"]["mean"] == pytest.approx(0.25)
    assert rows["kd"]["reliance"]["follows_swap"]["interval"] == "t over seeds"
    assert rows["student"]["reliance"]["follows_swap"]["interval"] == "t over samples"
    head, table = attention_rows({"attention": summary})
    assert head[3] == "answer follows swapped distractor"
    assert head.index("attention on distractor (mean over layers)") > 3
    assert table[0][3].startswith("25.0%") and table[0][7].startswith("+0.50")
