"""The offline teacher cache: with K = vocabulary it reproduces the online loss; the trainer
uses it transparently and refuses a cache that does not match the training rows."""

from __future__ import annotations

import pytest
import torch

from conftest import write_jsonl
from distill_rows import training_rows
from leaf.cli import main
from leaf.distill.cache import write_teacher_cache
from leaf.distill.recipe import build_trainer
from leaf.errors import LeafError
from test_distill_trainer import make_args


@pytest.fixture
def train_file(tmp_path):
    return write_jsonl(tmp_path / "cf.jsonl", training_rows(2, unverified=False))


def _cache(tmp_path, teacher, student, train_file, k, name):
    out = tmp_path / name
    rc = main(["teacher-cache", "--teacher", str(teacher), "--student", str(student),
               "--data", str(train_file), "--out", str(out), "--top-k", str(k),
               "--max-length", "256", "--batch-size", "2", "--device", "cpu"])
    assert rc == 0
    return out


def test_full_vocab_cache_equals_online_teacher(tmp_path, tiny_llama_dir, tiny_llama_big_dir,
                                                train_file):
    online = build_trainer(make_args(tmp_path, tiny_llama_dir, tiny_llama_big_dir, train_file,
                                     temperature=1.5))
    vocab = online.model.lm_head.weight.shape[0]
    full, small = (
        write_teacher_cache(online.teacher, online.processing_class, online.train_dataset,
                            tmp_path / name, k, vocab_size=vocab, progress=False)
        for name, k in (("full", vocab), ("small", 8))
    )
    trainers = [online] + [
        build_trainer(make_args(tmp_path, tiny_llama_dir, None, train_file, teacher_model=None,
                                teacher_cache=str(cache), temperature=1.5))
        for cache in (full, small)
    ]
    assert trainers[1].teacher is None and trainers[2].teacher is None
    batches = [t.data_collator([t.train_dataset[i] for i in range(6)]) for t in trainers]
    for divergence in ("forward_kl", "jsd"):
        results = []
        for t, b in zip(trainers, batches):
            t.args.divergence = divergence
            t.model.eval()
            t.model.zero_grad()
            loss = t.compute_loss(t.model, b)
            loss.backward()
            results.append((loss.item(), t.model.lm_head.weight.grad.clone()))
        (online, g_online), (cached, g_cached), (approx, _) = results
        assert cached == pytest.approx(online, rel=1e-5, abs=1e-7)
        assert torch.allclose(g_cached, g_online, atol=1e-7, rtol=1e-4)
        assert approx != pytest.approx(online, rel=1e-3)  # top-8 is an approximation


def test_training_from_cache_and_mismatches(tmp_path, tiny_llama_dir, tiny_llama_big_dir,
                                            train_file):
    cache = _cache(tmp_path, tiny_llama_big_dir, tiny_llama_dir, train_file, 16, "c")
    args = make_args(tmp_path, tiny_llama_dir, None, train_file, teacher_model=None,
                     teacher_cache=str(cache), max_steps=2)
    trainer = build_trainer(args)
    trainer.train()
    assert all(h["loss"] == h["loss"] for h in trainer.state.log_history if "loss" in h)
    with pytest.raises(LeafError, match="reverse_kl needs the full teacher"):
        build_trainer(make_args(tmp_path, tiny_llama_dir, None, train_file, teacher_model=None,
                                teacher_cache=str(cache), divergence="reverse_kl"))
    with pytest.raises(LeafError, match="tokenised differently"):
        build_trainer(make_args(tmp_path, tiny_llama_dir, None, train_file, teacher_model=None,
                                teacher_cache=str(cache), system_prompt="Be brief."))
