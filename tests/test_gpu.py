"""Checks for a CUDA device (marker ``gpu``): the fused loss, saliency and one bf16 training step
on the device, each against float32 computed the plain way.

Without CUDA they skip, so the suite never needs a GPU. ``scripts/gpu_check.sh`` runs them on the
GPU (``pytest -m gpu``); its ``--dry-run`` sets ``LEAF_TEST_DEVICE=cpu`` so that the same tests run
on the CPU instead of skipping (``tests/test_gpu_check.py``), and cannot rot unseen.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from leaf.detect.saliency import saliency_and_nll
from leaf.distill.fused import fused_distill_loss, teacher_from_logits
from leaf.distill.losses import token_divergence

pytestmark = pytest.mark.gpu


@pytest.fixture
def device() -> torch.device:
    if os.environ.get("LEAF_TEST_DEVICE") == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (scripts/gpu_check.sh --dry-run runs these on the CPU)")
    return torch.device("cuda")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_fused_loss_in_bfloat16_matches_the_obvious_float32_loss(device):
    g = torch.Generator().manual_seed(0)
    t, v, hs = 1024, 8192, 256
    h32 = torch.randn(t, hs, generator=g)
    w32 = 0.05 * torch.randn(v, hs, generator=g)
    zt = F.linear(torch.randn(t, hs, generator=g), 0.05 * torch.randn(v, hs, generator=g))
    groups = torch.zeros(t, dtype=torch.long)
    groups[: t // 4] = -1  # prompt positions: not counted
    coef = torch.tensor([1.0 / (t - t // 4)])

    h, w = h32.clone().requires_grad_(), w32.clone().requires_grad_()
    keep = groups >= 0
    want = (token_divergence(F.linear(h, w)[keep], zt[keep], "forward_kl").sum() * coef).sum()
    want_grads = torch.autograd.grad(want, (h, w))

    hb = h32.to(device, torch.bfloat16).requires_grad_()
    wb = w32.to(device, torch.bfloat16).requires_grad_()
    got = fused_distill_loss(hb, wb, groups.to(device), coef.to(device),
                             teacher=teacher_from_logits(zt.to(device, torch.bfloat16)),
                             num_groups=1, chunk_size=256)
    assert got.loss.dtype == torch.float32 and got.sums.dtype == torch.float32
    got_grads = torch.autograd.grad(got.loss, (hb, wb))
    # bfloat16 inputs (8-bit mantissa): a few per cent on the loss and gradients
    assert abs(got.loss.item() - want.item()) <= 3e-2 * want.item()
    for a, b in zip(got_grads, want_grads):
        assert a.dtype == torch.bfloat16 and rel(a.cpu(), b) <= 6e-2


def test_saliency_in_bfloat16_on_the_device(device, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, model.config.vocab_size, (2, 40), generator=g)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :20] = -100
    want = saliency_and_nll(model, ids, mask, labels)
    got = saliency_and_nll(model.to(device, torch.bfloat16), ids.to(device), mask.to(device),
                           labels.to(device))
    a, b = got.saliency.float().cpu().flatten(), want.saliency.flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] >= 0.95


def test_one_bf16_training_step_on_the_device(device, tiny_llama_dir, tiny_llama_big_dir,
                                               tmp_path):
    from conftest import write_jsonl
    from distill_rows import training_rows
    from leaf.distill.recipe import build_trainer
    from leaf.stages.distillation import build_distill_arguments

    train = write_jsonl(tmp_path / "train.jsonl", training_rows(4, unverified=False))
    args = build_distill_arguments({
        "teacher_model": str(tiny_llama_big_dir), "student_model": str(tiny_llama_dir),
        "train_file": str(train), "output_dir": str(tmp_path / "out"), "max_steps": 2,
        "per_device_train_batch_size": 2, "learning_rate": 1e-3, "bf16": True,
        "teacher_dtype": "bfloat16", "use_cpu": device.type == "cpu", "save_strategy": "no",
        "report_to": "none", "disable_tqdm": True, "max_length": 128, "logging_steps": 1,
        "dataloader_num_workers": 0}, {}, "test")
    trainer = build_trainer(args)
    assert trainer.model.device.type == device.type
    assert {p.dtype for p in trainer.teacher.parameters()} == {torch.bfloat16}
    before = [p.detach().clone() for p in trainer.model.parameters()]
    seen, real = [], trainer.objective

    class Spy:
        def __call__(self, *a, **k):
            parts, outputs = real(*a, **k)
            seen.append(parts.loss.dtype)
            return parts, outputs

        def __getattr__(self, name):
            return getattr(real, name)

    trainer.objective = Spy()
    trainer.train()
    assert seen and set(seen) == {torch.float32}
    after = list(trainer.model.parameters())
    assert all(p.dtype == torch.float32 for p in after)
    assert any(not torch.equal(a.detach().cpu(), b.cpu()) for a, b in zip(after, before))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses and all(x == x and x > 0 for x in losses)
