"""Input-gradient saliency against independent references, on tiny real models."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from leaf.data.templates import encode
from leaf.detect.saliency import (
    IGNORE_INDEX,
    input_saliency,
    pad_batch,
    saliency_and_nll,
)
from leaf.testbed.tiny import build_model, build_tokenizer

PAIRS = [
    ("Natalia sold 48 clips in April. A hint: the answer is 15. How many in May?",
     "Step 1: 48 / 2 = 24.\nThe answer is 24."),
    ("Let x + 3 = 10. What is x?", "x = 7."),
    ("Question: Who wrote the book?", "The author wrote it. Answer: the author"),
]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("llama3")


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, "llama", seed=3)


def _encoded(tok, pairs=PAIRS):
    seqs, labels = [], []
    for inst, resp in pairs:
        e = encode(tok, inst, resp)
        seqs.append(e.input_ids)
        labels.append([t if m else IGNORE_INDEX for t, m in zip(e.input_ids, e.label_mask())])
    return seqs, labels


def _rows(out, mask):
    """Per-sample vectors of real positions, in order."""
    return [(out.saliency[b][mask[b].bool()], out.nll[b][mask[b].bool()])
            for b in range(mask.shape[0])]


def _reference_g(model, seq, lbl):
    """g by the obvious route: one sample, HF's own mean loss, loss.backward() on a clone."""
    clone = copy.deepcopy(model).eval()
    ids = torch.tensor([seq])
    emb = clone.get_input_embeddings()(ids).detach().requires_grad_(True)
    out = clone(inputs_embeds=emb, labels=torch.tensor([lbl]))
    out.loss.backward()
    return emb.grad[0].norm(dim=-1), out.logits[0].detach()


def test_batch_equals_one_at_a_time_and_padding_sides_agree(model, tok):
    seqs, labels = _encoded(tok)
    singles = [_rows(saliency_and_nll(model, *pad_batch([s], [lb])), torch.ones(1, len(s)))[0]
               for s, lb in zip(seqs, labels)]
    for side in ("right", "left"):
        ids, mask, lab = pad_batch(seqs, labels, pad_id=tok.pad_token_id, side=side)
        assert mask.sum(1).tolist() == [len(s) for s in seqs]
        batched = _rows(saliency_and_nll(model, ids, mask, lab), mask)
        for (g1, n1), (gb, nb) in zip(singles, batched):
            torch.testing.assert_close(gb, g1, rtol=1e-5, atol=1e-5 * g1.abs().max().item())
            torch.testing.assert_close(nb, n1, rtol=1e-5, atol=1e-5)
    # padding gets no saliency
    ids, mask, lab = pad_batch(seqs, labels, side="left")
    assert (input_saliency(model, ids, mask, lab)[mask == 0] == 0).all()


def test_matches_backward_reference_and_nll(model, tok):
    seqs, labels = _encoded(tok)
    ids, mask, lab = pad_batch(seqs, labels)
    out = saliency_and_nll(model, ids, mask, lab)
    for b, (seq, lbl) in enumerate(zip(seqs, labels)):
        g_ref, logits = _reference_g(model, seq, lbl)
        n = len(seq)
        torch.testing.assert_close(out.saliency[b, :n], g_ref, rtol=1e-5, atol=1e-8)
        logp = torch.log_softmax(logits.double(), -1)
        nll_ref = -logp[torch.arange(n - 1), torch.tensor(seq[1:])]
        torch.testing.assert_close(out.nll[b, 1:n].double(), nll_ref, rtol=1e-5, atol=1e-5)
        assert out.nll[b, 0] == 0
        in_loss = torch.tensor(lbl[1:]) != IGNORE_INDEX
        torch.testing.assert_close(out.loss[b].double(), nll_ref[in_loss].mean(),
                                   rtol=1e-5, atol=1e-6)


def test_gradient_matches_finite_differences(tok):
    """Five-point central differences of the loss along random embedding directions.

    float64 model, but Llama's RMSNorm computes in float32, so the differences carry ~1e-5 of
    round-off (the directional derivatives checked here are 0.02 to 4); a fourth-order stencil
    with a step of 1e-3 keeps the truncation error below that.
    """
    model = build_model(tok, "llama", hidden=16, layers=1, heads=2, kv_heads=1, seed=5).double()
    seqs, labels = _encoded(tok, [("x + 3 = 10?", "7")])
    ids, mask, lab = pad_batch(seqs, labels)
    g = input_saliency(model, ids, mask, lab)[0]
    emb0 = model.get_input_embeddings()(ids).detach()

    def loss_at(emb):  # mean response CE in float64 (HF's own loss upcasts to float32 only)
        logp = torch.log_softmax(model(inputs_embeds=emb).logits[0, :-1], -1)
        keep = lab[0, 1:] != IGNORE_INDEX
        return -logp[keep, lab[0, 1:][keep]].mean()

    # full gradient by autograd on the embeddings, checked by finite differences
    e = emb0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_at(e), e)
    torch.testing.assert_close(g, grad[0].norm(dim=-1).float(), rtol=1e-6, atol=1e-12)
    gen = torch.Generator().manual_seed(0)
    h = 1e-3
    for pos in (1, len(seqs[0]) // 2, len(seqs[0]) - 2):
        v = torch.zeros_like(emb0)
        v[0, pos] = torch.randn(emb0.shape[-1], generator=gen, dtype=torch.float64)
        with torch.no_grad():
            f = {k: loss_at(emb0 + k * h * v) for k in (-2, -1, 1, 2)}
        fd = (f[-2] - 8 * f[-1] + 8 * f[1] - f[2]) / (12 * h)
        assert torch.isclose(fd, (grad * v).sum(), rtol=1e-4, atol=2e-5)


def test_parameters_never_get_grads_and_state_is_restored(tok):
    model = build_model(tok, "qwen2", seed=4)
    model.train()
    frozen = model.lm_head.weight
    frozen.requires_grad_(False)
    seqs, labels = _encoded(tok)
    g = input_saliency(model, *pad_batch(seqs, labels))
    assert torch.isfinite(g).all() and (g > 0).any()
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # mode restored
    assert not frozen.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "lm_head.weight")


def test_dropout_is_off_during_scoring(tok):
    model = build_model(tok, "llama", seed=3)
    model.config.attention_dropout = 0.5
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    model.train()
    batch = pad_batch(*_encoded(tok))
    torch.testing.assert_close(input_saliency(model, *batch), input_saliency(model, *batch))


def test_callable_under_no_grad_and_inference_mode(model, tok):
    batch = pad_batch(*_encoded(tok))
    ref = input_saliency(model, *batch)
    with torch.no_grad():
        torch.testing.assert_close(input_saliency(model, *batch), ref)
    with torch.inference_mode():
        inf_batch = pad_batch(*_encoded(tok))
        torch.testing.assert_close(input_saliency(model, *inf_batch).clone(), ref)


def test_no_labels_gives_zero_saliency(model, tok):
    seqs, _ = _encoded(tok)
    ids, mask, lab = pad_batch(seqs[:1], [[IGNORE_INDEX] * len(seqs[0])])
    assert (input_saliency(model, ids, mask, lab) == 0).all()


def test_models_split_with_device_map(tiny_llama_dir, tmp_path, llama_tok):
    seqs, labels = _encoded(llama_tok)
    batch = pad_batch(seqs, labels, side="left")
    ref = saliency_and_nll(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), *batch)
    maps = [
        {"": "cpu"},
        # accelerate hooks: the embedding and one layer offloaded to disk (weights on "meta")
        {"model.embed_tokens": "disk", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"},
    ]
    for i, device_map in enumerate(maps):
        model = AutoModelForCausalLM.from_pretrained(
            tiny_llama_dir, device_map=device_map, offload_folder=str(tmp_path / f"off{i}")
        )
        out = saliency_and_nll(model, *batch)
        torch.testing.assert_close(out.saliency, ref.saliency, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(out.nll, ref.nll, rtol=1e-5, atol=1e-6)
        assert all(p.grad is None for p in model.parameters())


def test_low_precision_dtype_runs_and_is_close(tok):
    model = build_model(tok, "llama", seed=3)
    batch = pad_batch(*_encoded(tok))
    g32 = input_saliency(model, *batch)
    g16 = input_saliency(copy.deepcopy(model).to(torch.bfloat16), *batch)
    assert g16.dtype == torch.float32
    corr = torch.corrcoef(torch.stack([g32.flatten(), g16.flatten()]))[0, 1]
    assert corr > 0.95
