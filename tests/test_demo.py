"""`leaf demo --quick`: the CI smoke test of the whole method on the shipped testbed checkpoints.

Budget: about a minute of CPU (one seed, 400 training and 3 x 100 test samples per family).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from leaf.commands.demo import demo_configs
from leaf.pipeline.config import load_config
from leaf.testbed.findings import TITLE
from terminal import run_in_terminal, screen_lines

SRC = Path(__file__).resolve().parents[1] / "src"


def _demo(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "leaf.cli", "demo", "--quick", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo as a person runs it: on a terminal (a pseudo-terminal), stdout and stderr on it;
    returns the output directory and the lines left on the screen."""
    out = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    rc, raw = run_in_terminal([sys.executable, "-m", "leaf.cli", "demo", "--quick", "--out",
                               str(out)], env, timeout=900)
    assert rc == 0, raw[-4000:]
    return out, "\n".join(screen_lines(raw))


def test_demo_on_a_terminal_shows_a_live_line_and_the_tables(demo_run):
    out, screen = demo_run
    tables = Counter(line.rstrip() for line in (out / "tables.md").read_text().splitlines())
    others = [line for line in screen.splitlines() if line.strip()]
    for line in list(others):
        if tables[line] > 0:
            tables[line] -= 1
            others.remove(line)
    assert len(others) <= 15, "\n".join(others)
    assert any(" stages in " in line and " ran, " in line for line in others), others
    assert not any(": running" in line for line in others)  # the stage lines went to the log
    for run_dir in out.glob("*-quick"):
        log = (run_dir / "stages.log").read_text()
        assert ": running" in log and ": done in " in log


def test_demo_prints_every_table(demo_run):
    _, stdout = demo_run
    # what the testbed studies showed comes first, then the headline: LeaF minus KD
    assert 0 <= stdout.index(TITLE) < stdout.index("## LeaF minus KD, paired by seed") \
        < stdout.index("## Accuracy")
    # the default demo: the distractor-shift regime of the second study, which it says first
    first = stdout.split("## LeaF minus KD")[0]
    assert "runs a small version of study 2's distractor-shift regime" in first
    for needle in ("## Accuracy", "Teacher", "Student (Pre-KD)", "KD w/o mask",
                   "LeaF (instruction)", "LeaF (instruction + response)", "in-distribution",
                   "anti-correlated", "clean", "anti, moved", "anti, two distractors",
                   "anti, in-topic", "## Detection against the planted spans",
                   "span recall", "token precision",
                   "## Counterfactuals", "## Attention on the planted distractor",
                   "answer follows swapped distractor",
                   "attention on distractor (mean over layers)", "uniform attention",
                   "LeaF (instruction) - KD w/o mask", "LeaF without verification (control)",
                   "planted removal from every row (oracle)",
                   "## Counterfactual signal (before distillation)", "kept, removing the whole planted number",
                   "demo finished"):
        assert needle in stdout, needle
    for rule in ("gradient", "ppl", "random"):
        assert f"| {rule} " in stdout


def test_demo_numbers_are_sane(demo_run):
    out, _ = demo_run
    for path in demo_configs():
        cfg = load_config(path, quick=True)
        res = json.loads((out / f"{cfg.name}-quick" / "results.json").read_text())
        sizes = cfg.data.sizes
        assert res["splits"] == [k for k in sizes if k != "train"]
        assert {"test_anti_moved", "test_anti_two", "test_anti_topic"} <= set(res["splits"])
        for key, per_split in res["models"].items():
            for split, m in per_split.items():
                assert 0.0 <= m["accuracy"] <= 1.0 and m["n"] == sizes[split], (key, split)
        rows = {r["key"]: r["cells"] for r in res["rows"]}
        assert {"teacher", "student", "kd", "leaf_instr", "leaf_instr_resp", "unverified",
                "planted_all"} <= set(rows)
        # the shipped checkpoints: a teacher that ignores the distractor, a student that leans on it
        assert min(c["mean"] for c in rows["teacher"].values()) >= 0.9
        assert rows["student"]["test_id"]["mean"] > rows["student"]["test_anti"]["mean"]
        counts = res["counts"]["data0"]
        assert counts["train"] == sizes["train"] and counts["scored"] > 0
        att = json.loads((out / f"{cfg.name}-quick" / "attention.json").read_text())
        assert att["spans"] == "planted" and att["split"] == "test_anti"
        measured = {m["key"] for m in att["models"]}
        assert measured == {"student", *cfg.distill.variants}
        n_layers = len(att["models"][0]["per_layer"])
        for m in att["models"]:
            assert m["n_items"] == min(cfg.attention.limit, sizes[att["split"]])
            assert len(m["per_layer"]) == n_layers
            assert 0.0 < m["mean"] < 1.0 and 0.0 < m["uniform"] < 1.0
        arows = {r["key"]: r for r in res["attention"]["rows"]}
        assert set(arows) == measured
        for r in arows.values():
            assert r["share"]["lo"] <= r["share"]["mean"] <= r["share"]["hi"]
        manifest = json.loads((out / f"{cfg.name}-quick" / "manifest.json").read_text())
        assert manifest["files"]["attention"] == ["attention.json"]
        for rule in ("gradient", "ppl", "random"):
            d = res["detection"][rule]
            assert d["n_samples"] == counts["scored"]
            for k in ("span_recall", "token_precision"):
                assert k not in d or 0.0 <= d[k]["mean"] <= 1.0


def test_the_default_demo_is_the_shift_regime_and_the_old_one_stays_available():
    assert [p.stem for p in demo_configs()] == ["word_problem_shift"]
    cfg = load_config(demo_configs()[0])
    assert Path(cfg.teacher).parts[-2:] == ("word_problem", "teacher_varied")
    assert Path(cfg.student).parts[-2:] == ("word_problem", "student_nl00")
    assert cfg.data.bias == 0.95
    assert [p.stem for p in demo_configs(["digit_sum"])] == ["digit_sum"]
    assert {p.stem for p in demo_configs(["all"])} >= {"digit_sum", "word_problem",
                                                        "word_problem_shift"}


def test_demo_rerun_reuses_every_stage(demo_run):
    out, _ = demo_run
    before = {p: json.loads(p.read_text())["stages"] for p in out.glob("*/manifest.json")}
    proc = _demo(out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "done earlier, skipped" in proc.stdout and ": running" not in proc.stdout
    for p, stages in before.items():
        after = json.loads(p.read_text())["stages"]
        assert {k: v["attempts"] for k, v in after.items()} == \
               {k: v["attempts"] for k, v in stages.items()}
