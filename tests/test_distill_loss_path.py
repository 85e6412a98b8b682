"""The trainer's loss from hidden states (kd_loss_path: hidden, the default where the model allows
it) equals its loss from full logits: loss, eval sums and every gradient, online teacher and
top-k cache, with LoRA; models whose logits are not output_layer(hidden) fall back to logits."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import write_jsonl
from distill_rows import training_rows
from leaf.distill.cache import write_teacher_cache
from leaf.distill.recipe import build_trainer
from leaf.errors import LeafError
from test_distill_trainer import _weights, batch_of, make_args


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(b.norm())
    return float((a - b).norm()) / den if den else float(a.norm())


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("rows") / "cf.jsonl",
                       training_rows(4, unverified=False))


def loss_and_grads(trainer, batch):
    model = trainer.model
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


def compare(a, b, tol=1e-5):
    (la, ga), (lb, gb) = a, b
    assert la == pytest.approx(lb, rel=tol)
    assert ga.keys() == gb.keys()
    for name in ga:
        assert rel(ga[name], gb[name]) <= tol, (name, rel(ga[name], gb[name]))


@pytest.mark.parametrize("divergence,ce_weight", [("forward_kl", 0.0), ("jsd", 0.3),
                                                  ("reverse_kl", 0.3)])
def test_hidden_path_equals_logits_path_online(tmp_path, tiny_llama_dir, tiny_llama_big_dir,
                                               rows_file, divergence, ce_weight):
    kw = dict(divergence=divergence, ce_weight=ce_weight, temperature=1.5, hybrid_lambda=0.3,
              kd_chunk_size=7)
    hidden = build_trainer(make_args(tmp_path, tiny_llama_dir, tiny_llama_big_dir, rows_file,
                                     **kw))
    logits = build_trainer(make_args(tmp_path, tiny_llama_dir, tiny_llama_big_dir, rows_file,
                                     kd_loss_path="logits", **kw))
    assert hidden.loss_path == "hidden" and logits.loss_path == "logits"
    assert hidden._teacher_parts is not None  # the teacher's logits come chunk by chunk too
    batch = batch_of(hidden, (0, 1, 1, 0))
    for t in (hidden, logits):
        t.model.train()
    compare(loss_and_grads(hidden, batch), loss_and_grads(logits, batch))
    # evaluation: the per-group sums behind eval_loss agree too
    for t in (hidden, logits):
        t.model.eval()
        t._eval_sums.zero_()
        with torch.no_grad():
            t.compute_loss(t.model, batch)
    assert rel(hidden._eval_sums, logits._eval_sums) <= 1e-5


def test_hidden_path_with_a_top_k_cache_and_with_lora(tmp_path, tiny_llama_dir,
                                                      tiny_llama_big_dir, rows_file):
    online = build_trainer(make_args(tmp_path, tiny_llama_dir, tiny_llama_big_dir, rows_file))
    cache = write_teacher_cache(online.teacher, online.processing_class, online.train_dataset,
                                tmp_path / "cache", 8, progress=False,
                                vocab_size=online.model.lm_head.weight.shape[0])
    lora = json.dumps({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    for extra in ({}, {"lora": lora}):
        kw = dict(teacher_model=None, teacher_cache=str(cache), ce_weight=0.2, **extra)
        hidden = build_trainer(make_args(tmp_path, tiny_llama_dir, None, rows_file, **kw))
        logits = build_trainer(make_args(tmp_path, tiny_llama_dir, None, rows_file,
                                         kd_loss_path="logits", **kw))
        assert hidden.loss_path == "hidden"
        batch = hidden.data_collator([hidden.train_dataset[i] for i in range(5)])
        got, want = loss_and_grads(hidden, batch), loss_and_grads(logits, batch)
        if extra:  # only the adapters train
            assert got[1] and all("lora_" in n for n in got[1])
        compare(got, want)


def test_training_steps_agree(tmp_path, tiny_llama_dir, tiny_llama_big_dir, rows_file):
    """Two optimizer steps with gradient accumulation: the same weights from either path."""
    ends = []
    for path in ("hidden", "logits"):
        trainer = build_trainer(make_args(tmp_path, tiny_llama_dir, tiny_llama_big_dir,
                                          rows_file, name=path, kd_loss_path=path, max_steps=2,
                                          gradient_accumulation_steps=2, ce_weight=0.1))
        assert trainer.loss_path == path
        trainer.train()
        ends.append(_weights(trainer.model))
    for name in ends[0]:
        assert torch.allclose(ends[0][name], ends[1][name], rtol=1e-5, atol=1e-6), name


def test_models_with_a_logit_transform_fall_back_to_logits(tmp_path, tiny_llama_dir,
                                                           tiny_llama_big_dir, rows_file):
    capped = tmp_path / "capped"
    shutil.copytree(tiny_llama_dir, capped)
    config = json.loads((capped / "config.json").read_text())
    (capped / "config.json").write_text(json.dumps({**config, "final_logit_softcapping": 30.0}))
    trainer = build_trainer(make_args(tmp_path, capped, tiny_llama_big_dir, rows_file))
    assert trainer.loss_path == "logits"
    with pytest.raises(LeafError, match="kd_loss_path: hidden is not possible"):
        build_trainer(make_args(tmp_path, capped, tiny_llama_big_dir, rows_file,
                                kd_loss_path="hidden"))
    with pytest.raises(ValueError, match="kd_loss_path must be one of"):
        make_args(tmp_path, tiny_llama_dir, tiny_llama_big_dir, rows_file, kd_loss_path="fast")


def test_kd_weight_grad_dtype_reaches_the_fused_loss(tmp_path, tiny_llama_dir, tiny_llama_big_dir,
                                                     rows_file, monkeypatch):
    import leaf.distill.objective as objective

    seen = []
    real = objective.fused_distill_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["weight_grad_dtype"])
        return real(*args, **kwargs)

    monkeypatch.setattr(objective, "fused_distill_loss", spy)
    trainer = build_trainer(make_args(tmp_path, tiny_llama_dir, tiny_llama_big_dir, rows_file,
                                      kd_weight_grad_dtype="float32"))
    trainer.model.train()
    loss_and_grads(trainer, batch_of(trainer, (0, 1, 1, 0)))
    assert seen and set(seen) == {"float32"}
    with pytest.raises(ValueError, match="kd_weight_grad_dtype must be one of"):
        make_args(tmp_path, tiny_llama_dir, tiny_llama_big_dir, rows_file,
                  kd_weight_grad_dtype="bfloat16")
