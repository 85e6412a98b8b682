"""The loss from hidden states (leaf.distill.fused) equals the obvious full-logits loss: values and
gradients (hidden states, output weight, bias, tied embeddings) in float32, every divergence,
temperatures, the cross-entropy term, odd shapes, masked rows, one group absent, the top-k cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig

from leaf.distill.fused import fused_distill_loss, teacher_from_hidden, teacher_from_logits
from leaf.distill.losses import chunked_sparse_divergence, token_divergence


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` (0 when both are 0)."""
    den = float(b.norm())
    return float((a - b).norm()) / den if den else float(a.norm())


def obvious(h, w, b, ht, wt, groups, coef, labels, ce_coef, divergence, t, beta):
    """Full logits of both models, token_divergence on all positions, weighted group sums."""
    logits = F.linear(h, w, b).reshape(-1, w.shape[0])
    teacher = F.linear(ht, wt).reshape(-1, wt.shape[0])
    g = groups.reshape(-1)
    d = token_divergence(logits, teacher, divergence, t, beta)
    keep = g >= 0
    sums = torch.stack([d[g == k].sum() for k in range(len(coef))])
    loss = (coef * sums).sum()
    ce = F.cross_entropy(logits[keep], labels.reshape(-1)[keep], reduction="sum")
    return loss + ce_coef * ce, sums.detach(), ce.detach()


def make(seed=0, b=3, t=23, hs=17, ht=13, v=61, vt=70, bias=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(b, t, hs, generator=g)).to(dtype).requires_grad_()
    w = (0.5 * torch.randn(v, hs, generator=g)).to(dtype).requires_grad_()
    bb = (0.3 * torch.randn(v, generator=g)).to(dtype).requires_grad_() if bias else None
    hte = torch.randn(b, t, ht, generator=g).to(dtype)
    wt = (0.6 * torch.randn(vt, ht, generator=g)).to(dtype)
    groups = torch.randint(-1, 2, (b, t), generator=g)
    groups[1] = -1  # a row with no counted position
    labels = torch.randint(0, v, (b, t), generator=g)
    return h, w, bb, hte, wt, groups, labels


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("ce_coef", [0.0, 0.37])
def test_matches_obvious_loss_and_gradients(divergence, temperature, ce_coef):
    h, w, b, hte, wt, groups, labels = make()
    coef = torch.tensor([0.3, 0.9])
    want, want_sums, want_ce = obvious(h, w, b, hte, wt, groups, coef, labels, ce_coef,
                                       divergence, temperature, 0.3)
    gw = torch.autograd.grad(want, (h, w, b))
    head = torch.nn.Linear(13, 70, bias=False)
    head.weight.data.copy_(wt)
    for teacher in (teacher_from_hidden(hte, head), teacher_from_logits(F.linear(hte, wt))):
        got = fused_distill_loss(h, w, groups, coef, teacher=teacher, bias=b, labels=labels,
                                 ce_coefficient=ce_coef, divergence=divergence,
                                 temperature=temperature, beta=0.3, chunk_size=7)
        gg = torch.autograd.grad(got.loss, (h, w, b))
        assert abs(got.loss.item() - want.item()) <= 1e-5 * abs(want.item())
        assert rel(got.sums, want_sums) <= 1e-5
        if ce_coef:
            assert abs(got.ce.item() - want_ce.item()) <= 1e-5 * want_ce.item()
        for a, e in zip(gg, gw):
            assert rel(a, e) <= 1e-5, (divergence, temperature, ce_coef, rel(a, e))
        assert (gg[0][groups < 0] == 0).all()  # uncounted positions get no gradient


@pytest.mark.parametrize("present", [(0,), (1,), (0, 1)], ids=["kd-only", "cd-only", "both"])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_one_group_absent_and_chunk_sizes(present, chunk):
    h, w, b, hte, wt, groups, labels = make(seed=3, b=2, t=11, hs=9, v=31, vt=31, bias=False)
    groups = torch.where(torch.isin(groups, torch.tensor(present)), groups, -1)
    coef = torch.tensor([0.5 if 0 in present else 0.0, 0.25 if 1 in present else 0.0])
    want, want_sums, _ = obvious(h, w, None, hte, wt, groups, coef, labels, 0.0, "forward_kl",
                                 1.0, 0.5)
    gw = torch.autograd.grad(want, (h, w))
    got = fused_distill_loss(h, w, groups, coef, teacher=teacher_from_logits(F.linear(hte, wt)),
                             chunk_size=chunk)
    gg = torch.autograd.grad(got.loss, (h, w))
    assert abs(got.loss.item() - want.item()) <= 1e-5 * abs(want.item())
    assert rel(got.sums, want_sums) <= 1e-5
    assert all(got.sums[k] == 0 for k in (0, 1) if k not in present)
    for a, e in zip(gg, gw):
        assert rel(a, e) <= 1e-5


def test_all_positions_masked_gives_zero_loss_and_gradients():
    h, w, b, hte, wt, groups, labels = make(seed=4)
    groups = torch.full_like(groups, -1)
    got = fused_distill_loss(h, w, groups, torch.ones(2),
                             teacher=teacher_from_logits(F.linear(hte, wt)), bias=b,
                             labels=labels, ce_coefficient=1.0)
    assert got.loss.item() == 0 and got.sums.abs().sum() == 0 and got.ce.item() == 0
    got.loss.backward()
    assert h.grad.abs().sum() == 0 and w.grad.abs().sum() == 0 and b.grad.abs().sum() == 0


def test_no_grad_gives_the_same_values_and_backward_twice_is_refused():
    h, w, b, hte, wt, groups, labels = make(seed=5)
    kw = dict(teacher=teacher_from_logits(F.linear(hte, wt)), bias=b, labels=labels,
              ce_coefficient=0.5, divergence="jsd")
    coef = torch.tensor([1.0, 2.0])
    with torch.no_grad():
        cold = fused_distill_loss(h, w, groups, coef, **kw)
    hot = fused_distill_loss(h, w, groups, coef, **kw)
    assert torch.equal(cold.loss, hot.loss.detach()) and torch.equal(cold.sums, hot.sums)
    hot.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        hot.loss.backward()


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 1.5])
def test_top_k_cache_matches_the_logits_path(divergence, temperature):
    h, w, b, hte, wt, groups, labels = make(seed=6, vt=61)
    teacher = F.linear(hte, wt).reshape(-1, 61)[(groups.reshape(-1) >= 0)]
    top = teacher.topk(9, dim=-1)
    coef = torch.tensor([0.7, 0.2])
    logits = F.linear(h, w, b)
    want_sums = chunked_sparse_divergence(logits, groups, top.indices.int(), top.values,
                                          num_groups=2, divergence=divergence,
                                          temperature=temperature, beta=0.4, chunk_size=4)
    want = (coef * want_sums).sum()
    gw = torch.autograd.grad(want, (h, w, b))
    got = fused_distill_loss(h, w, groups, coef, top_k=(top.indices.int(), top.values), bias=b,
                             divergence=divergence, temperature=temperature, beta=0.4,
                             chunk_size=4)
    gg = torch.autograd.grad(got.loss, (h, w, b))
    assert abs(got.loss.item() - want.item()) <= 1e-5 * abs(want.item())
    for a, e in zip(gg, gw):
        assert rel(a, e) <= 1e-5


def test_tied_embeddings_receive_both_gradients():
    """A tiny Llama with tied input/output embeddings: body + fused loss equals the whole
    model's logits + the obvious loss, for every parameter's gradient."""
    config = LlamaConfig(vocab_size=53, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_config(config)
    assert student.lm_head.weight is student.model.embed_tokens.weight
    ids = torch.randint(0, 53, (2, 9))
    teacher_logits = 2 * torch.randn(2, 9, 60)
    groups = torch.randint(-1, 2, (2, 9))
    coef = torch.tensor([0.4, 0.6])

    d = token_divergence(student(input_ids=ids).logits.reshape(-1, 53),
                         teacher_logits.reshape(-1, 60)).reshape(2, 9)
    want = sum(coef[k] * d[groups == k].sum() for k in (0, 1))
    params = [p for p in student.parameters()]
    gw = torch.autograd.grad(want, params)
    hidden = student.model(input_ids=ids).last_hidden_state
    got = fused_distill_loss(hidden, student.lm_head.weight, groups, coef,
                             teacher=teacher_from_logits(teacher_logits), chunk_size=3)
    gg = torch.autograd.grad(got.loss, params)
    assert abs(got.loss.item() - want.item()) <= 1e-5 * abs(want.item())
    for (name, _), a, e in zip(student.named_parameters(), gg, gw):
        assert rel(a, e) <= 1e-5, name


def test_runs_under_bfloat16_autocast():
    """Mixed precision (Trainer bf16=true): the chunk's logits come out of the autocast output
    layer in bfloat16; loss and gradients stay close to the float32 ones."""
    h, w, b, hte, wt, groups, labels = make(seed=7)
    coef = torch.tensor([0.5, 0.5])
    kw = dict(teacher=teacher_from_logits(F.linear(hte, wt)), bias=b, labels=labels,
              ce_coefficient=0.1, chunk_size=8)
    exact = fused_distill_loss(h, w, groups, coef, **kw)
    g_exact = torch.autograd.grad(exact.loss, (h, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = fused_distill_loss(h, w, groups, coef, **kw)
    g_mixed = torch.autograd.grad(mixed.loss, (h, w))
    assert mixed.loss.dtype == torch.float32 and g_mixed[1].dtype == torch.float32
    assert abs(mixed.loss.item() - exact.loss.item()) <= 3e-2 * exact.loss.item()
    for a, e in zip(g_mixed, g_exact):
        assert 0 < rel(a, e) <= 5e-2


@pytest.mark.parametrize("weight_grad_dtype", ["weight", "float32"])
def test_bfloat16_inputs_against_an_exact_loss(weight_grad_dtype):
    """bfloat16 hidden states and weight (no autocast): the products run in bfloat16, the chunk's
    softmax and divergence in float32 (chunks of half the positions), the weight's gradient is
    summed in bfloat16 or float32. Against the float64 loss of the same bfloat16 values: the loss
    within 1e-3 (float32 divergence; the logits carry bfloat16's 2**-8 relative rounding), the
    gradients within 2e-2 (a few bfloat16 roundings: logits, gradient, product)."""
    h, w, b, hte, wt, groups, labels = make(seed=8, t=40, v=300, vt=300, bias=False,
                                            dtype=torch.bfloat16)
    coef = torch.tensor([0.6, 0.4])
    h64, w64 = (x.detach().double().requires_grad_() for x in (h, w))
    want, want_sums, _ = obvious(h64, w64, None, hte.double(), wt.double(), groups,
                                 coef.double(), labels, 0.0, "forward_kl", 1.0, 0.5)
    gw = torch.autograd.grad(want, (h64, w64))
    got = fused_distill_loss(h, w, groups, coef, teacher=teacher_from_logits(F.linear(hte, wt)),
                             chunk_size=8, weight_grad_dtype=weight_grad_dtype)
    gg = torch.autograd.grad(got.loss, (h, w))
    assert got.loss.dtype == torch.float32 and got.sums.dtype == torch.float32
    assert gg[0].dtype == gg[1].dtype == torch.bfloat16
    assert abs(got.loss.item() - want.item()) <= 1e-3 * abs(want.item())
    for a, e in zip(gg, gw):
        assert 0 < rel(a.double(), e) <= 2e-2, weight_grad_dtype


def test_chunks_hold_fewer_positions_in_16_bits():
    from leaf.distill.fused import chunk_rows

    assert chunk_rows(256, torch.float32) == 256
    assert chunk_rows(256, torch.bfloat16) == chunk_rows(256, torch.float16) == 128
    assert chunk_rows(1, torch.bfloat16) == 1


def test_a_teacher_with_impossible_tokens_gives_the_obvious_loss():
    """Teacher logits of -inf (tokens it can never emit) have p_T = 0 and contribute 0 log 0 = 0,
    as in ``token_divergence``; the student's gradient there is its own probability."""
    h, w, b, hte, wt, groups, labels = make(seed=9, v=40, vt=40)
    zt = F.linear(hte, wt)
    zt[..., 5:9] = float("-inf")
    coef = torch.tensor([1.0, 0.5])
    logits = F.linear(h, w, b)
    g = groups.reshape(-1)
    d = token_divergence(logits.reshape(-1, 40), zt.reshape(-1, 40))
    want = sum(coef[k] * d[g == k].sum() for k in range(2))
    gw = torch.autograd.grad(want, (h, w, b))
    got = fused_distill_loss(h, w, groups, coef, teacher=teacher_from_logits(zt), bias=b,
                             chunk_size=6)
    gg = torch.autograd.grad(got.loss, (h, w, b))
    assert torch.isfinite(got.loss) and abs(got.loss.item() - want.item()) <= 1e-5 * want.item()
    for a, e in zip(gg, gw):
        assert rel(a, e) <= 1e-5


def test_an_unknown_weight_grad_dtype_is_refused():
    h, w, b, hte, wt, groups, labels = make(seed=10)
    with pytest.raises(ValueError, match="weight_grad_dtype"):
        fused_distill_loss(h, w, groups, torch.ones(2),
                           teacher=teacher_from_logits(F.linear(hte, wt)),
                           weight_grad_dtype="float16")
