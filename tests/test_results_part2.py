"""docs/RESULTS.md part 2 (scripts/make_results.py --study2): part 1 is kept byte for byte, part
2 is replaced on every run, and make_results without --study2 cannot overwrite part 1 by
accident."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from leaf.data.jsonl import write_json_atomic, write_jsonl_atomic
from leaf.pipeline import run_pipeline
from leaf.pipeline.config import load_config
from test_pipeline_plan import _sample, fake  # noqa: F401 (the fixture, used by name)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_results.py"
sys.path.insert(0, str(ROOT / "scripts"))
from results_part2 import MARKER, split_parts, with_part2  # noqa: E402


def _study2_like_run(tmp_path: Path, out: Path) -> None:
    """A finished `leaf run` (fake stages) with the second study's variant names."""
    files = {}
    for split, n in (("train", 6), ("test_id", 4), ("test_anti", 4), ("test_clean", 4)):
        files[split] = tmp_path / f"{split}.jsonl"
        write_jsonl_atomic(files[split], [_sample(i, split) for i in range(n)])
    for role in ("teacher", "student"):
        (tmp_path / role).mkdir(exist_ok=True)
        (tmp_path / role / "config.json").write_text("{}")
    cfg = {
        "name": "r1-nl00",
        "data": {"train": "train.jsonl",
                 "tests": {s: f"{s}.jsonl" for s in ("test_id", "test_anti", "test_clean")}},
        "teacher": "teacher", "student": "student",
        "counterfactuals": {"grad_t10": {"level": "instruction", "verify": True}},
        "seeds": [0, 1, 2, 3, 4],  # the design's replicates (fewer: a run still going)
        "distill": {"args": {"learning_rate": 0.001, "max_steps": 3},
                    "variants": {"kd": [], "leaf": ["grad_t10"], "planted": ["grad_t10"],
                                 "extra_kd_random": {"extra_originals": "grad_t10",
                                                     "extra_draw": "random"}}},
    }
    path = tmp_path / "r1.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_pipeline(load_config(path), out, log=lambda s: None)


def _make_results(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


@pytest.mark.usefixtures("fake")
def test_part2_is_appended_then_replaced_and_part1_kept_byte_for_byte(tmp_path):
    out = tmp_path / "leaf-study2"
    _study2_like_run(tmp_path, out / "r1-nl00")
    page = tmp_path / "RESULTS.md"
    part1 = split_parts((ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8"))[0].encode()
    assert MARKER.encode() not in part1
    page.write_bytes(part1)
    done = _make_results("--study2", str(out), "--out", str(page))
    assert done.returncode == 0, done.stderr
    first = page.read_text(encoding="utf-8")
    assert page.read_bytes().startswith(part1) and first.count(MARKER) == 1
    two = split_parts(first)[1]
    for needle in ("## Verdicts", "| R1-H2 (P): at dose 0%, leaf - kd > 0 on test_anti |",
                   "missing: r1-nl03, r1-nl15, r2", "not run yet", "### r1-nl00 (dose 0%)",
                   "leaf - kd", "no pilot decision yet", "## Regime R2: distractor shift",
                   "Falsification clause (docs/study2.md, R1): not evaluated",
                   "What these numbers do not show", "KD w/o mask"):
        assert needle in two, needle
    # the dose-response table: a row per dose, the finished one with its differences to kd
    dose = two[two.index("### Dose response"):].split("\n\n")[1].splitlines()
    assert dose[0].startswith("| dose | LeaF kept per replicate |") and len(dose) == 5
    assert dose[2].startswith("| 0% | ") and "[" in dose[2] and dose[2].count(" | ") == 9
    assert dose[3].startswith("| 3% | not finished |") and dose[4].startswith("| 15% | not")
    # a second run, then regenerate: part 1 unchanged, one part 2, now naming the new run
    shutil.copytree(out / "r1-nl00", out / "r1-nl15")
    shutil.copytree(out / "r1-nl00", out / "pilot-nl00")
    log = [{"epoch": e, "step": 25 * k, "loss": x} for k, (e, x) in enumerate(
        [(0.5, 2.0), (1.0, 1.0), (1.5, 0.6), (2.0, 0.4), (3.0, 0.45)], 1)]
    write_json_atomic(out / "pilot-nl00" / "distill" / "kd" / "seed0" / "model"
                      / "trainer_state.json", {"log_history": [*log, {"epoch": 3.0,
                                                                      "train_loss": 9.0}]})
    for seed in range(5):  # the full run's KD curve: mean over seeds 0-4 per epoch
        write_json_atomic(out / "r1-nl15" / "distill" / "kd" / f"seed{seed}" / "model"
                          / "trainer_state.json", {"log_history": log})
    write_json_atomic(out / "pilot" / "decision.json", {
        "signal_ratio": 0.6, "signal_check_passed": True, "train_rows": 8000, "epochs": 3,
        "figures": {"nl03": {"kd_epoch_means": {"1": 3.0}}}})  # study2_pilot.py's figures
    done = _make_results("--study2", str(out), "--out", str(page))
    assert done.returncode == 0, done.stderr
    second = page.read_text(encoding="utf-8")
    assert page.read_bytes().startswith(part1) and second.count(MARKER) == 1
    assert "missing: r1-nl03, r2" in second and "### r1-nl15 (dose 15%)" in second
    assert "| 15% | not finished" not in second and "| 3% | not finished" in second
    assert "training rows N = 8000, epochs = 3;" in second and "0.600 (check" in second
    assert "Falsification clause (docs/study2.md, R1): did not fire" in second
    # the KD curve per epoch: from the pilot run's trainer_state.json, else the decision's copy
    assert "| 1 | 1.5000 | 3.0000 | - |" in second and "| 3 | 0.4500 | - | - |" in second
    assert "Dose 0% (pilot-nl00): kept counterfactuals" in second
    curve = second[second.index("### KD's training loss over"):].split("\n\n")[2]
    assert curve.splitlines()[0] == "| epoch | R1 dose 15% |"
    assert "| 2 | 0.5000 |" in curve and "| last epoch vs the one before | -10.0% |" in curve
    assert "| converged by the pilot's rule (within 5%) | no |" in curve
    assert split_parts(second)[0] == split_parts(first)[0]
    # a run folder with fewer seeds than the design is still running: no interim verdict
    shutil.copytree(out / "r1-nl00", out / "r2")
    res = json.loads((out / "r2" / "results.json").read_text())
    write_json_atomic(out / "r2" / "results.json", {**res, "seeds": [0, 1]})
    done = _make_results("--study2", str(out), "--out", str(page))
    assert done.returncode == 0, done.stderr
    third = split_parts(page.read_text(encoding="utf-8"))[1]
    assert "still running (no verdict or table is read from them until every seed of the " \
           "design has run): r2 (2 of 5 seeds so far)" in third
    assert "Still running (shifted splits" in third
    assert "| R2-H1 (P): on each shifted split, planted - kd > 0 and leaf - kd > 0 |" in third
    r2_row = next(line for line in third.splitlines() if line.startswith("| R2-H1"))
    assert r2_row.rstrip(" |").endswith("not run yet")


@pytest.mark.usefixtures("fake")
def test_make_results_without_study2_refuses_to_clobber_part1(tmp_path):
    demo = tmp_path / "demo"
    _study2_like_run(tmp_path, demo / "fake")
    page = tmp_path / "RESULTS.md"
    # a page with part 2: refused, untouched
    part1 = split_parts((ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8"))[0]
    both = with_part2(part1, MARKER + "\n\nsomething\n")
    page.write_text(both, encoding="utf-8")
    done = _make_results(str(demo), "--out", str(page))
    assert done.returncode != 0 and "holds part 2" in done.stderr
    assert "Traceback" not in done.stderr and page.read_text(encoding="utf-8") == both
    # part 1 alone, made from run directories this folder lacks: refused, untouched
    page.write_text(part1, encoding="utf-8")
    done = _make_results(str(demo), "--out", str(page))
    assert done.returncode != 0 and "does not have (digit_sum-clean" in done.stderr
    assert page.read_text(encoding="utf-8") == part1
    # the default target, the committed docs/RESULTS.md (with part 2 or not), is refused
    committed = (ROOT / "docs" / "RESULTS.md").read_bytes()
    done = _make_results(str(demo))
    assert done.returncode != 0 and (ROOT / "docs" / "RESULTS.md").read_bytes() == committed
    # a new file, or one made from the same run directories, is (re)written as before
    fresh = tmp_path / "fresh.md"
    assert _make_results(str(demo), "--out", str(fresh)).returncode == 0
    assert _make_results(str(demo), "--out", str(fresh)).returncode == 0
    assert "Run directory `fake`" in fresh.read_text(encoding="utf-8")


def test_with_part2_keeps_any_part1_exactly():
    for part1 in ("# A\n\ntext\n", "# A\n\ntext", "# A\n\ntext\n\n", ""):
        once = with_part2(part1, MARKER + "\n\none\n")
        twice = with_part2(once, MARKER + "\n\ntwo\n")
        assert once.startswith(part1) and twice.startswith(part1)
        assert twice.count(MARKER) == 1 and twice.endswith("two\n")
        assert split_parts(twice)[1] == MARKER + "\n\ntwo\n"
