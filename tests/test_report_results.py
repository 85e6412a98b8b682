"""The report opens on the run's results (the tables of tables.md), then the scored samples
with their planted spans and both models' answers; the figures' statistics."""

from __future__ import annotations

import json
import math
import re
import subprocess

from conftest import write_jsonl
from leaf.cli import main
from leaf.pipeline import tables
from leaf.report.collect import build_report_data, planted_spans
from leaf.report.plots import group_models, plot_attention, plot_diff_distribution
from leaf.report.synthetic import make_rows


def cell(mean, lo, hi, values=(0.0,)):
    return {"mean": mean, "lo": lo, "hi": hi, "values": list(values), "n": 100,
            "interval": "t over seeds"}


RESULTS = {
    "name": "digit_sum", "quick": False, "splits": ["test_id", "test_anti"], "seeds": [0, 1],
    "replicates": ["data0", "data1"],
    "variants": {"kd": {"sets": [], "hybrid_lambda": 1.0},
                 "leaf_instr": {"sets": ["instruction_span"], "hybrid_lambda": 0.5}},
    "rows": [{"key": "kd", "label": "KD w/o mask", "members": ["kd-s0@data0", "kd-s1@data1"],
              "replicates": 2, "hybrid_lambda": 1.0, "mixing": None, "counterfactual_rows": None,
              "cells": {"test_id": cell(0.9, 0.85, 0.95), "test_anti": cell(0.7, 0.6, 0.8)}},
             {"key": "leaf_instr", "label": "LeaF (instruction)", "members": ["a", "b"],
              "replicates": 2, "hybrid_lambda": 0.5, "mixing": None,
              "counterfactual_rows": [10, 12],
              "cells": {"test_id": cell(0.91, 0.86, 0.96), "test_anti": cell(0.75, 0.7, 0.8)}}],
    "differences": [{"key": "leaf_instr", "label": "LeaF (instruction)", "baseline": "kd",
                     "pairs": 2, "runs_without_counterfactuals": 0,
                     "cells": {"test_id": cell(0.01, -0.02, 0.04),
                               "test_anti": cell(0.05, 0.01, 0.09)}}],
    "counts": {d: {"train": 100, "screened": 100, "teacher_right_student_wrong": 20, "scored": 20,
                   "sets": {"instruction_span": {"samples": 15, "counterfactuals": 20,
                                                 "verified": 8, "rejected": 12, "kept": 8,
                                                 "kept_remove_planted": 3}}}
               for d in ("data0", "data1")},
    "detection": {"gradient": {"n_samples": 40, "span_recall": cell(0.5, 0.4, 0.6),
                               "token_precision": cell(0.45, 0.4, 0.5)}},
    "attention": None,
}


def test_results_section_is_made_by_the_table_functions_of_tables_md():
    data = build_report_data([], [{"kind": "original", "id": "x", "instruction": "q"}],
                             results=RESULTS)
    blocks = {b["id"]: b for b in data["results"]["blocks"]}
    assert list(blocks) == ["differences", "accuracy", "detection", "counts"]
    assert blocks["differences"]["rows"] == tables.difference_rows(RESULTS)[1]
    assert blocks["accuracy"]["rows"] == tables.accuracy_rows(RESULTS)[1]
    assert blocks["detection"]["rows"] == tables.detection_rows(RESULTS)[1]
    # the interval of the anti-correlated difference lies above 0, the other straddles it
    assert blocks["differences"]["signs"] == [[0, 1]]
    # counts are pooled over the replicates in the report, kept share included
    assert blocks["counts"]["rows"] == [["instruction_span", "30", "40", "16", "24", "40%", "6"]]
    assert "kept: not rejected" in tables.counts_table(RESULTS)
    assert build_report_data([], [{"kind": "original", "id": "x"}])["results"] is None


def test_planted_spans_are_checked_against_the_instruction():
    row = {"instruction": "a = 1 ; rumor : 9 ; q", "planted": {
        "misleading": [[16, 17]], "distractor": [[8, 18], [5, 99], "x"]}}
    assert planted_spans(row) == {"misleading": [[16, 17]], "distractor": [[8, 18]]}
    assert planted_spans({"instruction": "x"}) is None


def scored_last(n: int = 30):
    """Synthetic rows with the unscored samples first in the file, one of them planted."""
    rows = make_rows(n, seed=3)
    scored = {r["id"] for r in rows["scores"]}
    rows["screened"].sort(key=lambda r: r["id"] in scored)
    first = next(r for r in rows["screened"] if r["id"] in scored)
    hint = first["instruction"].index("A hint")
    first["planted"] = {"misleading": [[hint, hint + 6]], "distractor": [[hint, hint + 20]]}
    return rows, scored, first["id"]


def report_of_a_run(tmp_path):
    """A run directory whose scored samples come last, with its report written."""
    rows, scored, planted_id = scored_last()
    run = tmp_path / "run"
    run.mkdir()
    for name, group in rows.items():
        write_jsonl(run / f"{name}.jsonl", group)
    (run / "results.json").write_text(json.dumps(RESULTS))
    assert main(["report", str(run), "--no-figures"]) == 0
    return run, scored, planted_id


def test_report_opens_on_the_results_then_scored_samples_with_answers(tmp_path):
    run, scored, planted_id = report_of_a_run(tmp_path)
    page = (run / "report.html").read_text(encoding="utf-8")
    assert page.index('id="results"') < page.index('id="figures"') < page.index('id="samples"')
    assert "LeaF (instruction) - KD w/o mask" in page and '<td class="pos">' in page
    # the filter offers scored samples first (the default)
    assert page.index('<option value="yes">') < page.index('<option value="all">all</option>'
                                                          '<option value="no">')
    data = json.loads(page.split('id="leaf-data">', 1)[1].split("</script>", 1)[0])
    sample = next(s for s in data["samples"] if s["id"] == planted_id)
    assert sample["pl"]["misleading"] and sample["ta"] and sample["sa"] and sample["gold"]
    assert data["samples"][0]["id"] not in scored  # file order kept: the page filters


def test_first_sample_on_the_page_is_a_scored_one(tmp_path, chromium):
    run, scored, planted_id = report_of_a_run(tmp_path)
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--no-first-run", "--disable-dev-shm-usage",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          f"file://{run / 'report.html'}"],
                         capture_output=True, text=True, timeout=120).stdout
    cards = [c.split('"', 1)[0] for c in dom.split('class="card" id="s-')[1:]]
    assert cards and cards[0] in scored and all(c in scored for c in cards)
    assert len(cards) == min(20, len(scored))
    assert dom.index('id="results"') < dom.index('class="card"')
    assert re.search(r'<span class="[^"]*\bpl-m\b[^"]*">', dom)  # the planted number is drawn
    assert "teacher said" in dom and "student said" in dom


def test_difference_figure_leaves_out_the_min_max_end_points(tmp_path, monkeypatch):
    import matplotlib.axes

    seen = []
    real = matplotlib.axes.Axes.hist
    monkeypatch.setattr(matplotlib.axes.Axes, "hist",
                        lambda self, x, *a, **k: seen.append((list(x), k)) or real(self, x, *a, **k))
    plot_diff_distribution({"instruction": [0.0, 0.2, 0.5, 1.0], "response": [0.0, 1.0, 0.3]},
                           tmp_path / "d.png", 0.1)
    assert [x for x, _ in seen] == [[0.2, 0.5], [0.3]]
    assert all(k["density"] and k["histtype"] == "step" for _, k in seen)


def test_attention_groups_carry_the_interval_over_runs(tmp_path):
    from leaf.intervals import mean_ci

    rows = [{"label": f"kd {s}", "group": "KD", "per_layer": [m], "mean": m, "uniform": 0.1}
            for s, m in enumerate((0.20, 0.22, 0.25))]
    (g,) = group_models(rows)
    ci = mean_ci([0.20, 0.22, 0.25])
    assert g["runs"] == 3 and math.isclose(g["mean_lo"], ci["low"]) and \
        math.isclose(g["mean_hi"], ci["high"])
    assert plot_attention(rows, tmp_path / "a.png").stat().st_size > 0
    two = [{**r, "per_layer": [r["mean"], r["mean"] / 2]} for r in rows]
    assert plot_attention(two, tmp_path / "b.png").stat().st_size > 0
