"""The chunked output layer of ``saliency_and_nll`` gives the full-logits path's numbers."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config

from leaf.data.templates import encode
from leaf.detect import saliency as S
from leaf.detect.saliency import IGNORE_INDEX, pad_batch, saliency_and_nll
from leaf.model_parts import chunkable_head
from leaf.testbed.tiny import build_model, build_tokenizer
from test_saliency import PAIRS


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("llama3")


def _batch(tok, side="right", no_label_row=False):
    seqs, labels = [], []
    for inst, resp in PAIRS:
        e = encode(tok, inst, resp)
        seqs.append(e.input_ids)
        labels.append([t if m else IGNORE_INDEX for t, m in zip(e.input_ids, e.label_mask())])
    if no_label_row:
        labels[1] = [IGNORE_INDEX] * len(seqs[1])
    return pad_batch(seqs, labels, pad_id=tok.pad_token_id, side=side)


def _assert_same(a, b):
    torch.testing.assert_close(a.saliency, b.saliency, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(a.nll, b.nll, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_chunked_equals_full_logits(tok, arch, side):
    model = build_model(tok, arch, seed=5)
    assert chunkable_head(model) is not None
    batch = _batch(tok, side, no_label_row=True)
    full = saliency_and_nll(model, *batch, chunk_size=None)
    assert (full.saliency[1] == 0).all() and (full.saliency[0] > 0).any()
    for chunk in (1, 7, 4096):
        _assert_same(saliency_and_nll(model, *batch, chunk_size=chunk), full)
    _assert_same(saliency_and_nll(model, *batch), full)  # the default


def test_chunked_path_never_builds_full_logits(tok, monkeypatch):
    model = build_model(tok, "llama", seed=5)
    ids, mask, lab = _batch(tok)
    rows_seen = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda m, inp, out: rows_seen.append(inp[0].shape))
    monkeypatch.setattr(type(model), "forward", lambda *a, **k: pytest.fail("full forward"))
    try:
        saliency_and_nll(model, ids, mask, lab, chunk_size=5)
    finally:
        hook.remove()
    assert rows_seen and all(s == (s[0], model.config.hidden_size) and s[0] <= 5
                             for s in rows_seen)
    # only real predicted positions go through the head: no padding, not the first token
    assert sum(s[0] for s in rows_seen) == int(mask.sum()) - mask.shape[0]


def _gemma2(tok):
    config = Gemma2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
        final_logit_softcapping=0.5, attn_logit_softcapping=None, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def test_soft_capped_logits_fall_back_to_full_path(tok):
    model = _gemma2(tok)
    assert chunkable_head(model) is None
    batch = _batch(tok)
    full = saliency_and_nll(model, *batch, chunk_size=None)
    _assert_same(saliency_and_nll(model, *batch, chunk_size=4), full)
    # the fallback matters: lm_head(hidden) without the cap gives other numbers
    body, head = model.get_decoder(), model.get_output_embeddings()
    ids, mask, lab = batch
    with S._frozen_eval(model), torch.enable_grad():
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        inputs = dict(inputs_embeds=emb, attention_mask=mask,
                      position_ids=S.position_ids_from_mask(mask), use_cache=False)
        _, nll, _ = S._chunked_head(body, head, inputs, ids, mask, lab, 4)
    assert not torch.allclose(nll, full.nll, rtol=1e-3)


def test_conservative_detection(tok):
    model = build_model(tok, "llama", seed=5)
    for field, value in [("final_logit_softcapping", 30.0), ("logit_scale", 0.0625),
                         ("logits_scaling", 8.0)]:
        setattr(model.config, field, value)
        assert chunkable_head(model) is None, field
        setattr(model.config, field, None)
    assert chunkable_head(model) == (model.model, model.lm_head)
    model.config.model_type = "somethingelse"
    assert chunkable_head(model) is None


def test_chunked_under_device_map_with_offloaded_head(tiny_llama_dir, tmp_path, llama_tok):
    batch = _batch(llama_tok, "left")
    full = saliency_and_nll(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), *batch,
                            chunk_size=None)
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "disk", "model.layers.1": "cpu",
                  "model.norm": "disk", "model.rotary_emb": "cpu", "lm_head": "disk"}
    model = AutoModelForCausalLM.from_pretrained(
        tiny_llama_dir, device_map=device_map, offload_folder=str(tmp_path / "off"))
    assert chunkable_head(model) is not None
    _assert_same(saliency_and_nll(model, *batch, chunk_size=3), full)
    assert all(p.grad is None for p in model.parameters())


def test_detect_batch_size_default_depends_on_device(monkeypatch):
    from leaf.stages.options import CUDA_DETECT_BATCH_SIZE as CUDA_BATCH_SIZE
    from leaf.stages.options import DetectOptions

    def default_batch_size(device):
        return DetectOptions(device=device).resolved_batch_size()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_batch_size("cpu") == default_batch_size("auto") == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_batch_size("auto") == default_batch_size("cuda") == CUDA_BATCH_SIZE
    assert default_batch_size("cpu") == 1
