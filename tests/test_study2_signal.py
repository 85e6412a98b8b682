"""scripts/study2_signal.py: the unverified sets' counterfactual signal, measured after a run,
and scripts/results_part2.py showing it."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from conftest import write_jsonl
from leaf.cli import main as leaf_main
from leaf.data.jsonl import read_jsonl
from leaf.distill.signal import response_kl, summarise
from leaf.models import load_model, load_tokenizer, resolve_model_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import study2_signal  # noqa: E402
from results_part2 import pilot_lines, signal_table  # noqa: E402

TEACHER, STUDENT = "testbed:word_problem/teacher", "testbed:word_problem/student"
ROWS = 10


def _pruned(tmp: Path, name: str, seed: int) -> Path:
    """A real unverified planted-removal set (`leaf prune --masking planted`) of ROWS rows."""
    from leaf.testbed.tasks import make_split

    data = write_jsonl(tmp / f"{name}-train.jsonl",
                       make_split("word_problem", "train", ROWS, seed=seed, bias=0.5))
    out = tmp / f"{name}.jsonl"
    assert leaf_main(["prune", "--data", str(data), "--out", str(out),
                      "--masking", "planted"]) == 0
    return out


def _study(tmp: Path) -> Path:
    """OUT with one run folder laid out as `leaf run` lays it out: config.json, manifest.json
    and two replicates whose planted_all_set is pruned; grad_t10_unverified's prune stage is
    not done yet (its file is there, half written)."""
    study = tmp / "study"
    run = study / "pilot-nl00"
    sets = {"grad_t10": {"verify": True}, "grad_t10_unverified": {"verify": False},
            "planted_all_set": {"verify": False, "rows": "all"}}
    stages = {}
    for k, dkey in enumerate(("data0", "data1")):
        (run / dkey / "prune").mkdir(parents=True)
        (run / dkey / "prune" / "planted_all_set.jsonl").write_bytes(
            _pruned(tmp, f"pa{k}", seed=k).read_bytes())
        (run / dkey / "prune" / "grad_t10_unverified.jsonl").write_text("{\"id\": \"half")
        stages[f"prune_{dkey}_planted_all_set"] = {"status": "done"}
        stages[f"prune_{dkey}_grad_t10_unverified"] = {"status": "running"}
    (run / "config.json").write_text(json.dumps(
        {"teacher": TEACHER, "student": STUDENT, "counterfactuals": sets}))
    (run / "manifest.json").write_text(json.dumps({"stages": stages}))
    return study


def test_unverified_sets_measured_sampled_cached_and_shown(tmp_path, capsys, monkeypatch):
    study = _study(tmp_path)
    args = [str(study), "--max-rows", "4", "--out", str(tmp_path / "sig")]
    assert study2_signal.main(args) == 0
    err = capsys.readouterr().err
    assert "pilot-nl00/data0/grad_t10_unverified: not pruned yet; skipped" in err
    assert "pilot-nl00/data1/planted_all_set (sampled 4 of 10): KL(teacher || student)" in err
    assert not (study / "pilot-nl00" / "extra_signal").exists()  # --out: nothing under OUT
    files = {}
    for dkey in ("data0", "data1"):
        path = tmp_path / "sig" / "pilot-nl00" / "extra_signal" / dkey / "planted_all_set.signal.json"
        files[dkey] = json.loads(path.read_text())
        assert not path.with_name("grad_t10_unverified.signal.json").exists()

    # the figures are the measure of leaf.distill.signal on the sampled rows and their originals
    saved = files["data0"]
    assert saved["sample"]["sampled"] == 4 and saved["sample"]["of"] == ROWS
    rows = read_jsonl(study / "pilot-nl00" / "data0" / "prune" / "planted_all_set.jsonl")
    cf_ids = [i for i in saved["rows"] if "#" in i]
    assert len(cf_ids) == 4 and len(saved["rows"]) == 8
    picked = [r for r in rows if r["id"] in cf_ids]
    origs = [r for r in rows if r["kind"] == "original" and r["id"] in
             {p["origin_id"] for p in picked}]
    teacher, student = resolve_model_name(TEACHER), resolve_model_name(STUDENT)
    assert saved["made_by"] == {"teacher": teacher, "student": student, "dtype": "float32"}
    tok = load_tokenizer(student, "student", padding_side=None)
    kl = response_kl(load_model(teacher, "float32", "cpu", "teacher"),
                     load_model(student, "float32", "cpu", "student"), tok, picked + origs)
    expect = summarise(kl, [r["id"] for r in picked], [r["id"] for r in origs])
    assert saved["figures"]["cf_kl_row"] == pytest.approx(expect.cf_row, rel=1e-5)
    assert saved["figures"]["orig_kl_row"] == pytest.approx(expect.orig_row, rel=1e-5)
    assert saved["figures"]["orig_kl_row"] > 0

    # the sample is fixed: the same ids on another call, whatever the file's order; the data
    # key seeds it
    again = study2_signal.draw([r for r in reversed(rows) if r["kind"] == "counterfactual"], 4,
                               study2_signal.sample_seed("planted_all_set", "data0"))
    assert sorted(r["id"] for r in again) == sorted(cf_ids)
    assert study2_signal.main([str(study), "--max-rows", "4", "--out", str(tmp_path / "sig2")]) \
        == 0
    other = json.loads((tmp_path / "sig2" / "pilot-nl00" / "extra_signal" / "data0"
                        / "planted_all_set.signal.json").read_text())
    assert other["rows"].keys() == saved["rows"].keys()
    assert saved["sample"]["seed"] != files["data1"]["sample"]["seed"]

    # a rerun measures nothing: no model loads, same files
    monkeypatch.setattr("leaf.distill.signal.load_model",
                        lambda *a, **k: pytest.fail("a model was loaded on a rerun"))
    capsys.readouterr()
    assert study2_signal.main(args) == 0
    assert "planted_all_set (sampled 4 of 10)" in capsys.readouterr().err
    path = tmp_path / "sig" / "pilot-nl00" / "extra_signal" / "data0" / "planted_all_set.signal.json"
    assert json.loads(path.read_text())["figures"] == saved["figures"]

    # results_part2: the unverified set's row is filled from these files and marked; the
    # verified set keeps results.json's figures
    counts = {dkey: {"sets": {"grad_t10": {"kept": 3, "signal": {
        "cf_kl_row": 0.5, "orig_kl_row": 2.0, "ratio_row": 0.25}},
        "planted_all_set": {"kept": ROWS}}} for dkey in ("data0", "data1")}
    res = {"counterfactual_sets": {"grad_t10": {}, "planted_all_set": {}}, "counts": counts}
    (study / "pilot-nl00" / "results.json").write_text(json.dumps(res))
    text = "\n".join(pilot_lines(study, tmp_path / "sig"))
    mean = lambda k: sum(f["figures"][k] for f in files.values()) / 2  # noqa: E731
    assert (f"| planted_all_set (unverified; sampled 4 of 10) | {ROWS} / {ROWS} | "
            f"{mean('cf_kl_row'):.3f} | {mean('orig_kl_row'):.3f} | {mean('ratio_row'):.2f} |"
            in text)
    assert "| grad_t10 | 3 / 3 | 0.500 | 2.000 | 0.25 |" in text
    # without the files: "-" as before, and no note
    plain = "\n".join(signal_table(res))
    assert f"| planted_all_set | {ROWS} / {ROWS} | - | - | - |" in plain
    assert "(unverified)" not in plain


def test_unsampled_set_is_marked_unverified_only(tmp_path):
    files = {"data0": {"figures": {"cf_kl_row": 1.0, "orig_kl_row": 4.0, "ratio_row": 0.25},
                       "sample": None}}
    res = {"counterfactual_sets": {"grad_t10_unverified": {}},
           "counts": {"data0": {"sets": {"grad_t10_unverified": {"kept": 7}}}}}
    text = "\n".join(signal_table(res, {"grad_t10_unverified": files}))
    assert "| grad_t10_unverified (unverified) | 7 | 1.000 | 4.000 | 0.25 |" in text


def test_draw_is_uniform_and_keeps_small_sets():
    rows = [{"id": f"r{i}"} for i in range(50)]
    assert study2_signal.draw(rows[:5], 10, 1) == rows[:5]
    hits = {r["id"]: 0 for r in rows}
    for seed in range(400):
        for r in study2_signal.draw(rows, 10, seed):
            hits[r["id"]] += 1
    assert min(hits.values()) > 40 and max(hits.values()) < 130  # expected 80 each
    assert study2_signal.draw(rows, 10, 7) == study2_signal.draw(list(rows), 10, 7)
    random.Random(0).shuffle(rows)  # order of the file does not change the draw
    assert sorted(r["id"] for r in study2_signal.draw(rows, 10, 7)) == sorted(
        r["id"] for r in study2_signal.draw(sorted(rows, key=lambda r: r["id"]), 10, 7))


def test_bad_input_is_one_clear_message(tmp_path, capsys):
    assert study2_signal.main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert study2_signal.main([str(tmp_path), "--runs", "r1-nl00"]) == 2
    assert "no run folder r1-nl00" in capsys.readouterr().err
