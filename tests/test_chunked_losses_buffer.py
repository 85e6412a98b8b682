"""The chunked losses compute each chunk's gradient in forward into one buffer: check it."""

import pytest
import torch

from leaf.distill.losses import (
    chunked_cross_entropy,
    chunked_divergence,
    chunked_sparse_divergence,
    token_divergence,
)


def _obvious_sums(student, teacher, groups, divergence):
    vocab = student.shape[-1]
    div = token_divergence(student.reshape(-1, vocab), teacher.reshape(-1, teacher.shape[-1]),
                           divergence, 1.5, 0.3)
    g = groups.reshape(-1)
    return torch.zeros(2).index_add(0, g[g >= 0], div[g >= 0].float())


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_whole_partial_and_empty_chunks_match_obvious(divergence, dtype):
    torch.manual_seed(0)
    student = (2 * torch.randn(2, 9, 17)).to(dtype).requires_grad_()
    teacher = (2 * torch.randn(2, 9, 19)).to(dtype)
    groups = torch.tensor([[0] * 9, [-1, -1, -1, 1, -1, 1, 1, 1, -1]])  # chunks of 3: all kinds
    weights = torch.tensor([0.4, 1.9])
    got = chunked_divergence(student, teacher, groups, num_groups=2, divergence=divergence,
                             temperature=1.5, beta=0.3, chunk_size=3)
    (g_got,) = torch.autograd.grad(got @ weights, student)
    want = _obvious_sums(student, teacher, groups, divergence)
    (g_want,) = torch.autograd.grad(want @ weights, student)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert torch.allclose(got, want, rtol=tol, atol=tol)
    assert g_got.dtype == dtype
    assert torch.allclose(g_got.float(), g_want.float(), rtol=tol, atol=tol)
    assert (g_got[groups < 0] == 0).all()
    with torch.no_grad():
        assert torch.allclose(chunked_divergence(student, teacher, groups, num_groups=2,
                                                 divergence=divergence, temperature=1.5,
                                                 beta=0.3, chunk_size=3), got, rtol=tol, atol=tol)


def test_second_backward_is_refused():
    student = torch.randn(1, 4, 5, requires_grad=True)
    loss = chunked_divergence(student, torch.randn(1, 4, 5), torch.zeros(1, 4, dtype=torch.long),
                              chunk_size=2).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()


def test_gradient_flows_through_a_graph_and_cross_entropy_matches():
    torch.manual_seed(1)
    weight = torch.randn(6, 11, requires_grad=True)
    hidden = torch.randn(2, 5, 6)
    labels = torch.tensor([[-100, 3, 4, -100, 1], [2, -100, -100, -100, 7]])
    got = chunked_cross_entropy(hidden @ weight, labels, chunk_size=4)
    (g_got,) = torch.autograd.grad(got, weight)
    want = torch.nn.functional.cross_entropy((hidden @ weight).reshape(-1, 11),
                                             labels.reshape(-1), reduction="sum")
    (g_want,) = torch.autograd.grad(want, weight)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(g_got, g_want, atol=1e-5)


def test_sparse_divergence_gradient_matches_autograd_of_the_same_formula():
    torch.manual_seed(2)
    student = torch.randn(1, 6, 10, requires_grad=True)
    groups = torch.tensor([[0, -1, 0, 1, 1, -1]])
    kept = (groups.reshape(-1) >= 0).sum()
    top_logits, top_idx = torch.randn(int(kept), 10).topk(3, dim=-1)
    got = chunked_sparse_divergence(student, groups, top_idx, top_logits, num_groups=2,
                                    chunk_size=4)
    (g_got,) = torch.autograd.grad(got.sum(), student)
    one = chunked_sparse_divergence(student, groups, top_idx, top_logits, num_groups=2,
                                    chunk_size=100)
    (g_one,) = torch.autograd.grad(one.sum(), student)
    assert torch.allclose(got, one, atol=1e-6) and torch.allclose(g_got, g_one, atol=1e-6)
    assert (g_got[groups < 0] == 0).all() and g_got.abs().sum() > 0
