"""The `attention` stage of `leaf run`: planned for testbed data, measured on real tiny models,
summarised over seeds and printed as a table."""

from __future__ import annotations

import json

import pytest
import yaml

from leaf.data.jsonl import write_jsonl_atomic
from leaf.errors import LeafError
from leaf.pipeline.attention_stage import measure_run, summarise_attention
from leaf.pipeline.config import load_config
from leaf.pipeline.plan import build_stages
from leaf.pipeline.reading import attention_statements
from leaf.pipeline.tables import attention_table, render


def _testbed_cfg(tmp_path, **extra):
    for role in ("teacher", "student"):
        (tmp_path / role).mkdir(exist_ok=True)
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"testbed": "digit_sum", "sizes": {"train": 5, "test_id": 2, "test_anti": 2}},
        "teacher": str(tmp_path / "teacher"), "student": str(tmp_path / "student"),
        "seeds": [0, 1], "distill": {"variants": {"kd": [], "leaf_instr": ["instruction_span"]}},
        **extra,
    }))
    return load_config(path)


def test_testbed_plan_measures_every_student_on_its_own_anti_split(tmp_path):
    cfg = _testbed_cfg(tmp_path)
    stages = build_stages(cfg, tmp_path / "run")
    names = [s.name for s in stages]
    att = stages[names.index("attention")]
    assert names.index("attention") == len(names) - 2 and names[-1] == "results"
    assert att.outputs == {"attention": tmp_path / "run" / "attention.json"}
    assert att.params["split"] == "test_anti" and att.params["limit"] == 100
    members = [m for _, m in att.params["models"]]
    assert members == ["student@data0", "student@data1", "kd-s0@data0", "kd-s1@data1",
                       "leaf_instr-s0@data0", "leaf_instr-s1@data1"]  # no teacher
    assert att.inputs["data:kd-s1@data1"] == tmp_path / "run/data1/data/test_anti.jsonl"
    assert stages[-1].inputs["attention"] == att.outputs["attention"]


def test_attention_stage_can_be_switched_off_and_is_checked(tmp_path):
    cfg = _testbed_cfg(tmp_path, attention={"enabled": False})
    assert "attention" not in [s.name for s in build_stages(cfg, tmp_path / "run")]
    with pytest.raises(LeafError, match="attention"):
        _testbed_cfg(tmp_path, attention={"splt": "test_id"})


def test_measure_run_on_a_tiny_model_with_a_planted_span(tmp_path, tiny_llama_dir):
    rows = [{"id": f"s{i}", "instruction": f"a = {i} ; rumor : 9 ; query a ?",
             "response": f"{i}. The answer is {i}.", "answer": str(i),
             "planted": {"misleading": [[17, 18]], "distractor": [[8, 18]]}} for i in range(4)]
    data = tmp_path / "anti.jsonl"
    write_jsonl_atomic(data, rows)
    out = tmp_path / "attention.json"
    entries = [{"key": "student", "member": "student@data0", "seed": None,
                "model": tiny_llama_dir, "data": data},
               {"key": "kd", "member": "kd-s0@data0", "seed": 0, "model": tiny_llama_dir,
                "data": data}]
    measure_run(entries, out, split="test_anti", part="distractor", limit=3, device="cpu",
                dtype="float32")
    att = json.loads(out.read_text())
    assert att["spans"] == "planted" and [m["label"] for m in att["models"]] == \
        ["Student (Pre-KD) (data0)", "KD w/o mask (seed 0)"]
    assert [m["group"] for m in att["models"]] == ["Student (Pre-KD)", "KD w/o mask"]
    a, b = att["models"]
    assert a["n_items"] == 3 and len(a["per_item"]) == 3
    assert 0.0 < a["mean"] < 1.0 and a["mean"] == pytest.approx(b["mean"])  # same weights
    summary = summarise_attention(att)
    row = summary["rows"][0]
    assert row["share"]["interval"] == "t over samples"
    assert row["share"]["lo"] <= row["share"]["mean"] <= row["share"]["hi"]


def _model(key, seed, mean, uniform=0.1):
    return {"key": key, "member": f"{key}-s{seed}", "seed": seed, "label": key, "n_items": 2,
            "per_layer": [mean - 0.01, mean + 0.01], "mean": mean, "uniform": uniform,
            "per_item": [{"share": mean - 0.02, "uniform": uniform},
                         {"share": mean + 0.02, "uniform": uniform}]}


def test_summary_over_seeds_and_the_printed_table():
    att = {"spans": "planted", "planted_part": "distractor", "split": "test_anti",
           "models": [_model("kd", 0, 0.30), _model("kd", 1, 0.32), _model("kd", 2, 0.34),
                      _model("leaf_instr", 0, 0.10), _model("leaf_instr", 1, 0.11),
                      _model("leaf_instr", 2, 0.12)]}
    summary = summarise_attention(att)
    kd, leaf = summary["rows"]
    assert kd["label"] == "KD w/o mask" and kd["replicates"] == 3
    assert kd["share"]["mean"] == pytest.approx(0.32) and kd["share"]["interval"] == "t over seeds"
    assert kd["share"]["lo"] < 0.32 < kd["share"]["hi"]
    assert kd["per_layer"] == pytest.approx([0.31, 0.33])
    results = {"attention": summary}
    table = attention_table(results)
    assert "| KD w/o mask" in table and "32.0% [" in table and "10.0%" in table
    said = " ".join(attention_statements(results))
    assert "LeaF (instruction) minus KD w/o mask: -21.000 percentage points (lower, intervals " \
           "do not overlap)" in said
    assert attention_table({"attention": None}) is None
    assert "## Attention on the planted distractor" in render({
        "name": "x", "splits": [], "rows": [], "counts": {"data0": {
            "train": 1, "teacher_right_student_wrong": 0, "scored": 0, "sets": {}}},
        **results})


def test_report_figure_averages_the_runs_of_a_group(tmp_path):
    from leaf.report.plots import group_models, plot_attention

    rows = [{**_model("kd", s, m), "group": "KD w/o mask"} for s, m in enumerate((0.2, 0.4))]
    rows.append({"label": "other", "per_layer": [0.5], "mean": 0.5, "uniform": None})
    grouped = group_models(rows)
    assert [g["label"] for g in grouped] == ["KD w/o mask (mean of 2 runs)", "other"]
    assert grouped[0]["mean"] == pytest.approx(0.3)
    assert grouped[0]["per_layer"] == pytest.approx([0.29, 0.31])
    assert plot_attention(rows, tmp_path / "a.png").stat().st_size > 0
