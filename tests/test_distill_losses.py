"""Chunked divergences equal the obvious implementation; vocabulary compatibility check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leaf.distill.losses import chunked_cross_entropy, chunked_divergence, token_divergence
from leaf.distill.vocab import check_shared_vocab
from leaf.errors import LeafError
from leaf.testbed.tiny import build_tokenizer


def obvious(student, teacher, groups, divergence, temperature, beta):
    """Full-vocabulary softmaxes for every position at once, then per-group sums."""
    v = student.shape[-1]
    p_t = torch.softmax(teacher[..., :v].double() / temperature, -1)
    p_s = torch.softmax(student.double() / temperature, -1)
    if divergence == "forward_kl":
        d = (p_t * (p_t.log() - p_s.log())).sum(-1)
    elif divergence == "reverse_kl":
        d = (p_s * (p_s.log() - p_t.log())).sum(-1)
    else:
        m = beta * p_t + (1 - beta) * p_s
        d = beta * (p_t * (p_t / m).log()).sum(-1) + (1 - beta) * (p_s * (p_s / m).log()).sum(-1)
    d = d * temperature**2
    return torch.stack([d[groups == g].sum() for g in range(2)]).float()


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_chunked_matches_obvious_loss_and_gradient(divergence, temperature):
    torch.manual_seed(0)
    b, t, v = 3, 23, 64
    student = (3 * torch.randn(b, t, v)).requires_grad_()
    teacher = 3 * torch.randn(b, t, v + 9)  # the teacher has extra logits, dropped
    groups = torch.randint(-1, 2, (b, t))
    weights = torch.tensor([0.3, 0.7])
    got = chunked_divergence(student, teacher, groups, num_groups=2, divergence=divergence,
                             temperature=temperature, beta=0.3, chunk_size=7)
    (g_got,) = torch.autograd.grad(got @ weights, student)
    want = obvious(student, teacher, groups, divergence, temperature, 0.3)
    (g_want,) = torch.autograd.grad(want @ weights, student)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert torch.allclose(g_got, g_want, atol=1e-6, rtol=1e-4)
    assert (g_got[groups < 0] == 0).all()  # prompt and padding positions get no gradient


def test_divergence_properties():
    torch.manual_seed(1)
    z = torch.randn(5, 40)
    for div in ("forward_kl", "reverse_kl", "jsd"):
        assert token_divergence(z, z, div).abs().max() < 1e-6
    a, b = torch.randn(5, 40), torch.randn(5, 40)
    assert torch.allclose(token_divergence(a, b, "forward_kl"), token_divergence(b, a, "reverse_kl"))
    assert torch.allclose(token_divergence(a, b, "jsd"), token_divergence(b, a, "jsd"), atol=1e-6)
    # forward KL is what torch's kl_div computes (teacher = target)
    ref = F.kl_div(F.log_softmax(a, -1), F.log_softmax(b, -1), log_target=True,
                   reduction="none").sum(-1)
    assert torch.allclose(token_divergence(a, b, "forward_kl"), ref, atol=1e-6)


def test_chunked_cross_entropy_matches_torch():
    torch.manual_seed(2)
    logits = torch.randn(2, 11, 30, requires_grad=True)
    labels = torch.randint(0, 30, (2, 11))
    labels[0, :4] = -100
    got = chunked_cross_entropy(logits, labels, chunk_size=3)
    want = F.cross_entropy(logits.reshape(-1, 30), labels.reshape(-1), reduction="sum")
    assert torch.allclose(got, want, atol=1e-5)
    g1, = torch.autograd.grad(got, logits)
    g2, = torch.autograd.grad(want, logits)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_no_grad_mode_and_empty_groups():
    s, t = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    g = torch.full((2, 5), -1)
    assert chunked_divergence(s, t, g, num_groups=2).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        token_divergence(torch.randn(2, 9), torch.randn(2, 8))


def test_vocab_check_accepts_teacher_with_extra_tokens():
    student = build_tokenizer("llama3")
    teacher = build_tokenizer("llama3")
    teacher.add_tokens(["<extra_a>", "<extra_b>"])
    assert len(teacher) == len(student) + 2
    assert check_shared_vocab(student, teacher, len(student), len(teacher) + 64) == len(student)


def test_vocab_check_rejects_disagreeing_tokenizers():
    student = build_tokenizer("llama3")
    teacher = build_tokenizer("chatml")  # same BPE corpus, different special tokens
    teacher.add_tokens([f"<x{i}>" for i in range(32)])
    assert len(teacher) > len(student)
    with pytest.raises(LeafError, match="disagree on .* shared ids"):
        check_shared_vocab(student, teacher)
    with pytest.raises(LeafError, match="fewer than the student"):
        check_shared_vocab(student, build_tokenizer("llama3", vocab_size=300))


def _saved_bytes_beyond_inputs(fn, inputs):
    """Bytes of the tensors autograd keeps for backward once ``fn`` has returned (tensors
    saved and freed again inside ``fn`` do not count), not counting the inputs' storage."""
    import weakref

    skip = {t.untyped_storage().data_ptr() for t in inputs}
    refs = []

    def pack(t):
        refs.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    alive = {}
    for ref in refs:
        t = ref()
        if t is not None and t.untyped_storage().data_ptr() not in skip:
            alive[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    del out
    return sum(alive.values())


def test_chunked_keeps_no_full_vocabulary_tensors_for_backward():
    b, t, v, chunk = 2, 256, 1000, 32
    student = torch.randn(b, t, v, requires_grad=True)
    teacher = torch.randn(b, t, v)
    groups = torch.zeros(b, t, dtype=torch.long)
    full = b * t * v * 4  # one float32 tokens x vocabulary tensor
    chunked = _saved_bytes_beyond_inputs(
        lambda: chunked_divergence(student, teacher, groups, chunk_size=chunk), [student, teacher])
    obvious = _saved_bytes_beyond_inputs(
        lambda: token_divergence(student.reshape(-1, v), teacher.reshape(-1, v)).sum(),
        [student, teacher])
    assert obvious >= 2 * full  # the plain version keeps softmaxes of every position
    # the chunked one keeps the student's gradient, computed in forward (one tokens x vocabulary
    # tensor that backward must produce anyway), and no softmax
    assert chunked <= full + b * t * 8
