"""bfloat16 end to end on the CPU: `leaf run` (screen, detect, prune with verification, distil on
both loss paths, evaluate) with ``runtime: {dtype: bfloat16}`` beside the same run in float32,
then the teacher cache written by a bfloat16 teacher and trained from on both loss paths.

What must hold in bfloat16, and the tolerances (chosen from what bfloat16's 8-bit mantissa,
a relative rounding of 2**-9 per operation, does to these small models, with margin, and
tight enough that a real dtype bug fails them):

- distillation trains with mixed precision: ``bf16`` autocast over a student kept (and saved)
  in float32, the frozen teacher loaded in bfloat16 (no float32 copy of it);
- the loss is accumulated in float32: the objective's loss and its divergence sums are float32
  tensors on both paths, and the first step's loss (same weights, same batch) is within 5% of
  float32's (observed about 1.5%: the models' own bfloat16 arithmetic); the hidden-state and
  logits paths agree within 2% of each other (observed 0.1%);
- the teacher cache of a bfloat16 teacher stores its top-k values in bfloat16 (2 bytes each,
  beside int32 ids: 6 bytes per kept logit), the largest value within 8 bfloat16 rounding steps
  (relative 2**-8 each) of the float32 teacher's and on the same token for >= 95% of positions, and training from it gives a first-step loss within 5% of the float32 cache's;
- results stay close to float32: screening agrees on >= 90% of rows, the detection scores of
  the rows both runs scored correlate >= 0.95, and every accuracy is within 3/16 (three test
  answers of 16; greedy decoding can flip near-ties) of float32's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from leaf.cli import main
from leaf.data.jsonl import read_jsonl

CONFIG = """
name: bf16-check
data:
  testbed: digit_sum
  seed: 0
  bias: 0.4
  sizes: {train: 32, test_id: 16, test_anti: 16, test_clean: 16}
seeds: [0]
runtime: {device: cpu, dtype: DTYPE, threads: 1}
screen: {batch_size: 32, max_new_tokens: 24}
detect: {levels: [instruction], segments: 2, batch_size: 16}
prune: {threshold_mode: fixed, tau: 0.10}
counterfactuals:
  instruction_span: {level: instruction, masking: gradient, strategy: span, verify: true}
distill:
  args: {max_steps: 3, per_device_train_batch_size: 8, max_length: 96, learning_rate: 1.0e-4,
         logging_steps: 1, report_to: none, disable_tqdm: true, dataloader_num_workers: 0,
         save_strategy: "no"}
  variants:
    kd: {sets: [], hybrid_lambda: 1.0}
    leaf_instr: {sets: [instruction_span], args: {kd_loss_path: hidden}}
    leaf_logits: {sets: [instruction_span], args: {kd_loss_path: logits}}
evaluate: {batch_size: 32, max_new_tokens: 24}
detection: {rules: {gradient: instruction_span}}
attention: {enabled: false}
"""


def run_in(tmp: Path, dtype: str) -> Path:
    config = tmp / f"{dtype}.yaml"
    config.write_text(CONFIG.replace("DTYPE", dtype))
    run = tmp / dtype
    assert main(["run", str(config), "--run-dir", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bf16")
    return run_in(tmp, "float32"), run_in(tmp, "bfloat16")


def first_loss(model_dir: Path) -> float:
    state = json.loads((model_dir / "trainer_state.json").read_text())
    return next(e["loss"] for e in state["log_history"] if "loss" in e)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_distillation_runs_mixed_precision_over_float32_weights(runs):
    f32, bf16 = runs
    for variant in ("kd", "leaf_instr", "leaf_logits"):
        cfg = yaml.safe_load((bf16 / "distill" / variant / "seed0" / "config.yaml").read_text())
        assert cfg["bf16"] is True and cfg["teacher_dtype"] == "bfloat16", variant
        model = bf16 / "distill" / variant / "seed0" / "model"
        with safe_open(str(model / "model.safetensors"), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}, variant  # noqa: SIM118
    plain = yaml.safe_load((f32 / "distill" / "kd" / "seed0" / "config.yaml").read_text())
    assert "bf16" not in plain and "teacher_dtype" not in plain


def test_the_online_teacher_is_loaded_in_bfloat16(runs, tmp_path):
    from leaf.distill.recipe import build_trainer
    from leaf.stages.distillation import build_distill_arguments

    _, bf16 = runs
    cfg = yaml.safe_load((bf16 / "distill" / "kd" / "seed0" / "config.yaml").read_text())
    trainer = build_trainer(build_distill_arguments({**cfg, "output_dir": str(tmp_path)}, {},
                                                    "test"))
    assert {p.dtype for p in trainer.teacher.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}


def test_loss_stays_close_to_float32(runs):
    f32, bf16 = runs
    # KD trains on the originals only: the same rows and weights in both runs
    a = first_loss(bf16 / "distill" / "kd" / "seed0" / "model")
    b = first_loss(f32 / "distill" / "kd" / "seed0" / "model")
    assert a > 0 and rel(a, b) <= 0.05, (a, b)
    # the two loss paths on the same bfloat16 data
    hidden = first_loss(bf16 / "distill" / "leaf_instr" / "seed0" / "model")
    logits = first_loss(bf16 / "distill" / "leaf_logits" / "seed0" / "model")
    assert rel(hidden, logits) <= 0.02, (hidden, logits)


def test_screen_detect_prune_and_eval_stay_close_to_float32(runs):
    f32, bf16 = runs
    s32 = {r["id"]: r for r in read_jsonl(f32 / "data0" / "screen" / "screened.jsonl")}
    s16 = {r["id"]: r for r in read_jsonl(bf16 / "data0" / "screen" / "screened.jsonl")}
    assert s32.keys() == s16.keys()
    same = sum(s32[k]["teacher_correct"] == s16[k]["teacher_correct"]
               and s32[k]["student_correct"] == s16[k]["student_correct"] for k in s32)
    assert same >= 0.9 * len(s32)

    d32 = {r["id"]: r for r in read_jsonl(f32 / "data0" / "detect" / "instruction.jsonl")}
    d16 = {r["id"]: r for r in read_jsonl(bf16 / "data0" / "detect" / "instruction.jsonl")}
    both = d32.keys() & d16.keys()
    assert both
    for k in both:
        for side in ("teacher", "student"):
            x, y = torch.tensor(d32[k][side]), torch.tensor(d16[k][side])
            assert x.shape == y.shape
            assert torch.corrcoef(torch.stack([x, y]))[0, 1] >= 0.95, (k, side)

    res32 = json.loads((f32 / "results.json").read_text())
    res16 = json.loads((bf16 / "results.json").read_text())
    counts = res16["counts"]["data0"]
    assert counts["scored"] > 0
    # verification ran (with both bfloat16 models) and kept some counterfactuals
    made = counts["sets"]["instruction_span"]
    assert made["verified"] > 0 and made["verified"] + made["rejected"] == made["counterfactuals"]
    pruned = [r for r in read_jsonl(bf16 / "data0" / "prune" / "instruction_span.jsonl")
              if r["kind"] == "counterfactual"]
    assert sum(r["verified"] is True for r in pruned) == made["verified"]
    for key, per_split in res32["models"].items():
        for split, m in per_split.items():
            other = res16["models"][key][split]
            assert m["n"] == other["n"] == 16
            assert abs(m["accuracy"] - other["accuracy"]) <= 3 / 16 + 1e-9, (key, split)


def cache(tmp: Path, run: Path, dtype: str) -> Path:
    cfg = yaml.safe_load((run / "distill" / "leaf_instr" / "seed0" / "config.yaml").read_text())
    out = tmp / f"cache-{dtype}"
    assert main(["teacher-cache", "--teacher", cfg["teacher_model"], "--student",
                 cfg["student_model"], "--data", cfg["train_file"], "--out", str(out),
                 "--top-k", "16", "--max-length", "96", "--dtype", dtype, "--device", "cpu",
                 "--batch-size", "8"]) == 0
    return out


def train_from_cache(run: Path, cache_dir: Path, path: str, out: Path) -> tuple[float, list]:
    """The first step's loss of training from ``cache_dir`` with bf16 autocast, and the dtypes
    of the objective's loss and sums at each call."""
    from leaf.distill.recipe import build_trainer
    from leaf.stages.distillation import build_distill_arguments

    cfg = yaml.safe_load((run / "distill" / "leaf_instr" / "seed0" / "config.yaml").read_text())
    cfg.pop("teacher_model"), cfg.pop("teacher_dtype", None)
    cfg.update(teacher_cache=str(cache_dir), kd_loss_path=path, max_steps=1, bf16=True,
               output_dir=str(out))
    trainer = build_trainer(build_distill_arguments(cfg, {}, "test"))
    seen, real = [], trainer.objective

    def spy(*a, **k):
        parts, outputs = real(*a, **k)
        seen.append((parts.loss.dtype, parts.sums.dtype, parts.terms.loss.dtype))
        return parts, outputs

    trainer.objective = _Spy(real, spy)
    trainer.train()
    return next(e["loss"] for e in trainer.state.log_history if "loss" in e), seen


class _Spy:
    """The objective with its call recorded (attributes read through to it)."""

    def __init__(self, real, call) -> None:
        self._real, self._call = real, call

    def __call__(self, *a, **k):
        return self._call(*a, **k)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_teacher_cache_in_bfloat16(runs, tmp_path):
    _, bf16 = runs
    c16, c32 = cache(tmp_path, bf16, "bfloat16"), cache(tmp_path, bf16, "float32")
    kept = 0
    for shard in sorted(c16.glob("shard-*.safetensors")):
        with safe_open(str(shard), "pt") as f16, \
                safe_open(str(c32 / shard.name), "pt") as f32:
            assert f16.get_slice("logits").get_dtype() == "BF16"
            assert f16.get_slice("indices").get_dtype() == "I32"
            v16, v32 = f16.get_tensor("logits"), f32.get_tensor("logits")
            i16, i32 = f16.get_tensor("indices"), f32.get_tensor("indices")
        assert v16.shape == v32.shape and v16.shape[1] == 16
        kept += v16.numel()
        # the largest logit: the same token, its value within a bfloat16 rounding of the
        # teacher's own bfloat16 arithmetic (a few ulps at this magnitude)
        assert (i16[:, 0] == i32[:, 0]).float().mean() >= 0.95
        top = v32[:, 0].abs().clamp(min=1)
        assert ((v16[:, 0].float() - v32[:, 0]).abs() <= 8 * 2 ** -8 * top).all()
        assert shard.stat().st_size <= kept * 6 + 4096  # 2-byte values + 4-byte ids + header
    assert kept > 0


@pytest.mark.parametrize("path", ["hidden", "logits"])
def test_training_from_a_bfloat16_cache(runs, tmp_path, path):
    _, bf16 = runs
    c16, c32 = cache(tmp_path, bf16, "bfloat16"), cache(tmp_path, bf16, "float32")
    loss16, seen = train_from_cache(bf16, c16, path, tmp_path / "m16")
    loss32, _ = train_from_cache(bf16, c32, path, tmp_path / "m32")
    assert seen and all(d == (torch.float32,) * 3 for d in seen), seen
    assert math.isfinite(loss16) and loss16 > 0 and rel(loss16, loss32) <= 0.05, (loss16, loss32)
