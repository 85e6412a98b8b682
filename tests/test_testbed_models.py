"""The shipped testbed checkpoints: they load, share a vocabulary, and behave as calibrated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leaf.detect.spans import cut, remove_spans
from leaf.errors import LeafError
from leaf.testbed.assets import ASSETS_DIR, calibration, families_shipped, load, model_dir
from leaf.testbed.evaluate import greedy_accuracy
from leaf.testbed.tasks import FAMILIES, make_splits
from leaf.testbed.tokenizer import build_testbed_tokenizer

N = 40  # items per split: enough to tell a >= 90% teacher from a fooled student, fast
SEED = 7  # differs from the training (pre-training mixes) and calibration (1000) seeds

# What each family's shipped pair is for. `n`: items per split (multi_step's student is graded
# inside a band, which needs more items). `teacher`: its floor on every split. `student_clean`:
# the band of the student's clean accuracy (None: no band). `anti_below`: test_anti lies at
# least `gap` below `split`. `pruned`: the share of the student's test_anti errors it gets right
# once the planted number is cut out. digit_sum and word_problem: a student right in
# distribution and fooled by the decoy; multi_step: a student imperfect even on clean inputs,
# and worse with a wrong distractor.
TARGETS = {
    "digit_sum": dict(n=N, teacher=0.9, student_id=0.8, student_clean=None,
                      anti_below=("test_id", 0.2), pruned=0.7),
    "word_problem": dict(n=N, teacher=0.9, student_id=0.8, student_clean=None,
                         anti_below=("test_id", 0.2), pruned=0.7),
    "multi_step": dict(n=100, teacher=0.95, student_id=0.8, student_clean=(0.65, 0.90),
                       anti_below=("test_clean", 0.1), pruned=0.5),
}


def test_every_family_is_shipped_within_the_size_budget():
    assert families_shipped() == sorted(FAMILIES)
    total = sum(p.stat().st_size for p in ASSETS_DIR.rglob("*") if p.is_file())
    assert total <= 20 * 2**20


def test_unknown_family_or_role_is_a_clear_error():
    with pytest.raises(LeafError, match="no shipped teacher checkpoint"):
        model_dir("nope", "teacher")
    with pytest.raises(ValueError, match="role"):
        model_dir("digit_sum", "oracle")


def test_digits_are_single_tokens():
    tok = build_testbed_tokenizer(["a = 15 ; b = 307", "The answer is 42."] * 20, vocab_size=300)
    ids = tok("x = 1234", add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert pieces[-4:] == ["1", "2", "3", "4"]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def shipped(request):
    family = request.param
    teacher, tok_t = load(family, "teacher")
    student, tok_s = load(family, "student")
    n = TARGETS[family]["n"]
    splits = make_splits(family, seed=SEED, bias=0.95,
                         sizes={"train": 0, "test_id": n, "test_anti": n, "test_clean": n})
    return family, teacher, student, tok_t, tok_s, splits


def test_teacher_and_student_share_one_tokenizer(shipped):
    family, teacher, student, tok_t, tok_s, _ = shipped
    assert tok_t.get_vocab() == tok_s.get_vocab()
    assert teacher.config.vocab_size == student.config.vocab_size == len(tok_t)
    files = [(model_dir(family, r) / "tokenizer.json").read_bytes() for r in ("teacher",
                                                                              "student")]
    assert files[0] == files[1]
    assert sum(p.numel() for p in teacher.parameters()) > 2 * sum(
        p.numel() for p in student.parameters())


def test_every_family_states_its_targets():
    assert sorted(TARGETS) == sorted(FAMILIES)


def test_teacher_is_right_and_student_is_fooled(shipped):
    family, teacher, student, tok, _, splits = shipped
    target = TARGETS[family]
    torch.set_num_threads(1)
    t = {s: greedy_accuracy(teacher, tok, rows)["accuracy"] for s, rows in splits.items()}
    assert min(t.values()) >= target["teacher"], t
    s = {split: greedy_accuracy(student, tok, rows) for split, rows in splits.items()}
    acc = {split: r["accuracy"] for split, r in s.items()}
    reference, gap = target["anti_below"]
    assert acc["test_id"] >= target["student_id"], acc
    assert acc["test_anti"] < acc[reference] - gap, acc
    if target["student_clean"]:
        lo, hi = target["student_clean"]
        assert lo <= acc["test_clean"] <= hi, acc
    s_anti = s["test_anti"]
    # The distractor causes those errors: with its number cut out (what pruning leaves) the
    # student answers most of the same problems right.
    wrong = [row for row, ok in zip(splits["test_anti"], s_anti["correct"]) if not ok]
    pruned = []
    for row in wrong:
        (span,) = row["planted"]["misleading"]
        text = row["instruction"]
        pruned.append(row | {"instruction": remove_spans(text, [cut(text, tuple(span))])})
    assert greedy_accuracy(student, tok, pruned)["accuracy"] >= target["pruned"]


def test_calibration_records_the_measured_targets():
    for family in FAMILIES:
        calib, target = calibration(family), TARGETS[family]
        assert min(calib["teacher"]["accuracy"].values()) >= target["teacher"]
        acc = calib["student"]["accuracy"]
        assert acc["test_anti"] < acc[target["anti_below"][0]]
        if target["student_clean"]:
            lo, hi = target["student_clean"]
            assert lo <= acc["test_clean"] <= hi
        for role in ("teacher", "student"):
            assert {"steps", "seed", "train_wall_s", "arch"} <= set(calib[role])


def test_run_configs_name_shipped_models_and_known_families():
    """The bundled `leaf run` configs (leaf/configs/testbed/) load and name shipped models."""
    from leaf.pipeline.config import PACKAGE_DIR, load_config
    from leaf.testbed.tasks import SHIFT_SPLITS, SPLITS

    configs = sorted((PACKAGE_DIR / "configs" / "testbed").glob("*.yaml"))
    # one config per family, plus the demo's distractor-shift regime of word_problem
    assert [c.stem for c in configs] == sorted([*FAMILIES, "word_problem_shift"])
    for path in configs:
        cfg = load_config(path)
        shift = path.stem == "word_problem_shift"
        assert cfg.data.testbed == ("word_problem" if shift else path.stem)
        assert set(cfg.data.sizes) == set(SPLITS) | (set(SHIFT_SPLITS) if shift else set())
        for role in ("teacher", "student"):
            assert (Path(getattr(cfg, role)) / "config.json").is_file()
        assert len(cfg.seeds) >= 3 and 0 <= cfg.distill.hybrid_lambda <= 1
        assert cfg.lambda_of("kd") == 1.0 and not cfg.distill.variants["kd"].sets
