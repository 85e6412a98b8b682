"""What a run can conclude: bootstrap intervals from per-item scores, the verdict line, the
pair check and strict JSON, on the plan wired with fake stages (tests/test_pipeline_plan.py)
whose evaluations write per-item rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import leaf.pipeline.plan as plan
import leaf.stages as leaf_stages
import test_pipeline_plan
from leaf.data.jsonl import read_jsonl, write_json_atomic, write_jsonl_atomic
from leaf.pipeline import run_pipeline
from leaf.pipeline.config import load_config
from leaf.pipeline.tables import render
from test_pipeline_plan import FakeStages

# item k of every 4-item test split is answered right by ...
RIGHT = {"teacher": {0}, "student": {0, 1, 2}}  # the pair of the issue: teacher 0.25, student 0.75


class ItemStages(FakeStages):
    """Evaluations that write ``metrics.samples.jsonl``: the teacher and the student as in
    :data:`RIGHT`; every distilled model, whatever its seed or variant, answers item 0 only
    (the KD and LeaF runs of the issue: 0.25 each, identical item by item)."""

    def evaluate(self, model, bench, out_dir, options=None):
        rows = read_jsonl(bench)
        right = RIGHT.get(Path(model).name, {0})
        samples = [{"id": r["id"], "task": "math", "correct": k in right}
                   for k, r in enumerate(rows)]
        write_jsonl_atomic(Path(out_dir) / "metrics.samples.jsonl", samples)
        write_json_atomic(Path(out_dir) / "metrics.json", {
            "task": "math", "n": len(rows),
            "accuracy": sum(s["correct"] for s in samples) / len(rows)})


@pytest.fixture
def run_config(tmp_path) -> Path:
    """The run config of tests/test_pipeline_plan.py: 4 items per test split, data files."""
    return test_pipeline_plan.config.__wrapped__(tmp_path)


@pytest.fixture
def items_fake(monkeypatch):
    f = ItemStages()
    for name in ("screen", "detect", "prune", "distill", "evaluate"):
        monkeypatch.setattr(leaf_stages, name, getattr(f, name))
    monkeypatch.setattr(plan, "detection_metrics", lambda cf, sc, out: write_json_atomic(
        out, {"span_recall": float("nan"), "token_precision": 0.5, "n_samples": 3}))
    return f


def _reject(name: str):
    raise ValueError(f"not strict JSON: {name}")


def test_four_items_three_seeds_give_an_interval_and_say_nothing_can_be_concluded(
        items_fake, run_config, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = load_config(run_config, overrides={"seeds": [0, 1, 2]})
    results = run_pipeline(cfg, run, log=lambda s: None)
    diff = {d["key"]: d for d in results["differences"]}["leaf_instr"]
    cell = diff["cells"]["test_anti"]
    assert cell["mean"] == 0.0 and diff["pairs"] == 3
    assert cell["hi"] - cell["lo"] > 0.2, cell  # today's t over seeds gave [+0.000, +0.000]
    assert cell["interval"] == "bootstrap: seeds x items" and cell["shared_items"] is True
    assert cell["resamples"] == 2000 and cell["items"] == [4, 4, 4]
    kd = {r["key"]: r for r in results["rows"]}["kd"]["cells"]["test_anti"]
    assert kd["mean"] == 0.25 and kd["hi"] - kd["lo"] > 0.2
    text = render(results)
    headline = text.split("## Accuracy")[0].strip().splitlines()
    assert headline[-1].startswith("Verdict: nothing can be concluded")
    assert "more test items" in headline[-1] and "3 seeds x 4 test items" in headline[-1]
    assert "smallest detectable" in text.split("## Accuracy")[0]
    # distillation left the student (0.75) at 0.25: named as information, not a warning
    low = next(line for line in headline if line.startswith("Below the starting point"))
    assert "information, not a warning" in low and "anti-correlated" in low
    # the pair check ran before any distillation and warned: teacher 0.25, student 0.75
    err = capsys.readouterr().err
    assert "leaf run: warning: the teacher is not better than the student" in err
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    order = list(stages)
    assert order.index("pair_check_data") < min(i for i, k in enumerate(order)
                                                 if k.startswith("distill_"))
    check = results["pair_check"]["data"]
    assert check["tests"]["test_anti"] == {"teacher": 0.25, "student": 0.75, "n": 4}
    assert check["screened"] == {"n": 6, "teacher": 1.0, "student": 0.5}
    assert set(check["teacher_not_better"]) == {"test_id", "test_anti", "test_clean"}
    assert "## Pair check" in text and "Warning: the teacher is not better" in text
    # every JSON file the run wrote is strict JSON (the detection NaN became null)
    written = sorted(run.rglob("*.json"))
    assert len(written) > 20
    for path in written:
        json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject)
    assert results["detection"]["gradient"]["replicates"]["data"]["span_recall"] is None


def test_a_teacher_better_everywhere_gives_no_pair_warning(
        items_fake, run_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(RIGHT, "teacher", {0, 1, 2, 3})
    results = run_pipeline(load_config(run_config), tmp_path / "run", log=lambda s: None)
    assert results["pair_check"]["data"]["teacher_not_better"] == []
    out = capsys.readouterr()
    assert "not better" not in out.err
    assert "leaf run: pair check (data): screened training data (6): teacher 1.000 vs " \
           "student 0.500" in out.out
    assert "## Pair check" in render(results) and "Warning" not in render(results)


def test_a_difference_the_runs_show_is_named_with_its_split_and_direction():
    cell = {"mean": 0.2, "lo": 0.1, "hi": 0.3, "items": [200] * 5, "detectable": 0.14,
            "half_width": 0.1, "dominant": "items"}
    zero = {**cell, "mean": 0.0, "lo": -0.1, "hi": 0.1}
    results = {"splits": ["test_anti", "test_clean"], "seeds": [0, 1, 2, 3, 4],
               "differences": [{"key": "leaf_instr", "label": "LeaF (instruction)", "pairs": 5,
                                "runs_without_counterfactuals": 0,
                                "cells": {"test_anti": zero, "test_clean": cell}}]}
    from leaf.pipeline.tables import difference_rows, verdict

    line = verdict(results)
    assert line.startswith("Verdict: the runs show LeaF (instruction) above KD w/o mask on "
                           "clean (+0.200)")
    assert "no other difference is told from 0" in line
    assert "smallest detectable" not in difference_rows(results)[0]  # 5 seeds x 200 items


def test_the_report_shows_the_verdict_and_the_pair_check(items_fake, run_config, tmp_path):
    from leaf.report.collect import results_section
    from leaf.report.html import results_html

    results = run_pipeline(load_config(run_config, overrides={"seeds": [0, 1, 2]}),
                           tmp_path / "run", log=lambda s: None)
    section = results_section(results)
    blocks = {b["id"]: b for b in section["blocks"]}
    assert blocks["differences"]["lines"][-1].startswith("Verdict: nothing can be concluded")
    assert "smallest detectable" in blocks["differences"]["header"]
    assert blocks["pair_check"]["lines"][0].startswith("Warning: the teacher is not better")
    page = results_html(section)
    assert '<p class="verdict">Verdict: nothing can be concluded' in page
    assert "Pair check: teacher and student before distillation" in page
