"""Token-level divergences between teacher and student next-token distributions.

For one position with teacher logits ``z_T`` and student logits ``z_S`` at temperature ``t``,
``p_T = softmax(z_T / t)`` and ``p_S = softmax(z_S / t)``:

- ``forward_kl`` (the paper's choice): ``t^2 * KL(p_T || p_S) = t^2 * sum_v p_T (log p_T - log p_S)``
- ``reverse_kl``: ``t^2 * KL(p_S || p_T)``
- ``jsd``: ``t^2 * (beta * KL(p_T || m) + (1 - beta) * KL(p_S || m))`` with
  ``m = beta * p_T + (1 - beta) * p_S`` (``beta = 0.5`` is the symmetric Jensen-Shannon divergence).

When the teacher has more logits than the student (Qwen2.5-72B: 152064, Qwen2.5-Math-1.5B:
151936), the teacher's extra logits are dropped: both distributions live on the student's
vocabulary. :func:`leaf.distill.vocab.check_shared_vocab` checks that the shared ids mean the
same strings.

:func:`token_divergence` is the obvious implementation over ``[N, V]`` tensors.
:func:`chunked_divergence` computes the same sums over a ``[B, T, V]`` batch in chunks of
positions under activation checkpointing: only one chunk's float32 softmax tensors exist at a
time, in the forward pass and again in the backward pass, so the extra memory is
``chunk_size x V`` rather than ``tokens x V``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` over the last dimension from log-probabilities (0 log 0 = 0)."""
    p = log_p.exp()
    # mask before multiplying, so that a zero p never meets an infinite log in backward
    return (p * torch.where(p > 0, log_p - log_q, torch.zeros_like(p))).sum(-1)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-position divergence ``D(p_T, p_S) * t^2``: ``[N, V_S]``, ``[N, V_T >= V_S]`` -> ``[N]``.

    Computed in float32. The teacher's logits beyond the student's vocabulary are dropped.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    vocab = student_logits.shape[-1]
    if teacher_logits.shape[-1] < vocab:
        raise ValueError(
            f"teacher has {teacher_logits.shape[-1]} logits, fewer than the student's {vocab}"
        )
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits[..., :vocab].float() / temperature, dim=-1)
    if divergence == "forward_kl":
        div = _kl(log_t, log_s)
    elif divergence == "reverse_kl":
        div = _kl(log_s, log_t)
    else:
        if beta <= 0.0 or beta >= 1.0:  # the mixture equals one side: JSD is 0
            return torch.zeros(log_s.shape[:-1], dtype=log_s.dtype, device=log_s.device)
        log_m = torch.logsumexp(
            torch.stack([log_t + math.log(beta), log_s + math.log(1.0 - beta)]), dim=0
        )
        div = beta * _kl(log_t, log_m) + (1.0 - beta) * _kl(log_s, log_m)
    return div * temperature**2


def _chunk_sums(
    student: torch.Tensor,
    teacher: torch.Tensor,
    keep: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
    divergence: str,
    temperature: float,
    beta: float,
) -> torch.Tensor:
    # indexing happens inside the checkpointed function so that only views are saved
    div = token_divergence(student[keep], teacher[keep], divergence, temperature, beta)
    return torch.zeros(num_groups, dtype=div.dtype, device=div.device).index_add(0, groups, div)


def chunked_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    groups: torch.Tensor,
    *,
    num_groups: int = 1,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Sum of :func:`token_divergence` over positions, per group, computed chunk by chunk.

    ``student_logits`` ``[..., V_S]`` and ``teacher_logits`` ``[..., V_T]`` share their leading
    dimensions; ``groups`` (long, same leading shape) gives each position's group in
    ``[0, num_groups)``, or ``-1`` for positions that do not count (prompt, padding).
    Returns ``[num_groups]`` float32 sums (``S_g = sum_{i: group_i = g} D_i``); differentiable
    with respect to ``student_logits``. The teacher never receives a gradient.
    """
    vocab_s, vocab_t = student_logits.shape[-1], teacher_logits.shape[-1]
    student = student_logits.reshape(-1, vocab_s)  # a view for contiguous logits
    teacher = teacher_logits.detach().reshape(-1, vocab_t)
    groups = groups.reshape(-1).to(student.device)
    if teacher.shape[0] != student.shape[0] or groups.shape[0] != student.shape[0]:
        raise ValueError("student logits, teacher logits and groups must cover the same positions")
    teacher = teacher.to(student.device)
    total = torch.zeros(num_groups, dtype=torch.float32, device=student.device)
    needs_grad = torch.is_grad_enabled() and student.requires_grad
    for lo in range(0, student.shape[0], chunk_size):
        g = groups[lo : lo + chunk_size]
        keep = (g >= 0).nonzero(as_tuple=True)[0]
        if keep.numel() == 0:
            continue
        s, t = student[lo : lo + chunk_size], teacher[lo : lo + chunk_size]
        args = (s, t, keep, g[keep], num_groups, divergence, temperature, beta)
        if needs_grad:  # keep only the chunk's inputs; recompute its softmaxes in backward
            total = total + checkpoint(_chunk_sums, *args, use_reentrant=False)
        else:
            total = total + _chunk_sums(*args)
    return total


def chunked_cross_entropy(
    student_logits: torch.Tensor, labels: torch.Tensor, *, chunk_size: int = 1024
) -> torch.Tensor:
    """Summed next-token cross-entropy of ``labels`` (``-100`` = ignored), chunk by chunk.

    ``student_logits[..., i, :]`` predicts ``labels[..., i]`` (labels already shifted).
    """
    vocab = student_logits.shape[-1]
    logits = student_logits.reshape(-1, vocab)
    labels = labels.reshape(-1).to(logits.device)
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    needs_grad = torch.is_grad_enabled() and logits.requires_grad

    def ce(chunk: torch.Tensor, keep: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(chunk[keep].float(), target, reduction="sum")

    for lo in range(0, logits.shape[0], chunk_size):
        y = labels[lo : lo + chunk_size]
        keep = (y != -100).nonzero(as_tuple=True)[0]
        if keep.numel() == 0:
            continue
        args = (logits[lo : lo + chunk_size], keep, y[keep])
        total = total + (checkpoint(ce, *args, use_reentrant=False) if needs_grad else ce(*args))
    return total


def _sparse_chunk_sums(
    student: torch.Tensor,
    keep: torch.Tensor,
    top_idx: torch.Tensor,
    top_logits: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
    divergence: str,
    temperature: float,
    beta: float,
) -> torch.Tensor:
    log_s = F.log_softmax(student[keep].float() / temperature, dim=-1)  # [n, V]
    log_s_top = log_s.gather(-1, top_idx.long())  # [n, K]
    log_q = F.log_softmax(top_logits.float() / temperature, dim=-1)  # renormalised top-k
    if divergence == "forward_kl":
        div = _kl(log_q, log_s_top)
    elif divergence == "jsd":
        if beta <= 0.0 or beta >= 1.0:
            div = torch.zeros(log_q.shape[0], device=log_q.device)
        else:
            log_m = torch.logaddexp(log_q + math.log(beta), log_s_top + math.log(1.0 - beta))
            inside = _kl(log_s_top, log_m)  # student mass on the teacher's top-k
            outside = (1.0 - log_s_top.exp().sum(-1)).clamp(min=0) * -math.log(1.0 - beta)
            div = beta * _kl(log_q, log_m) + (1.0 - beta) * (inside + outside)
    else:
        raise ValueError(f"{divergence} needs the full teacher distribution, not a top-k cache")
    div = div * temperature**2
    return torch.zeros(num_groups, dtype=div.dtype, device=div.device).index_add(0, groups, div)


def chunked_sparse_divergence(
    student_logits: torch.Tensor,
    groups: torch.Tensor,
    top_indices: torch.Tensor,
    top_logits: torch.Tensor,
    *,
    num_groups: int = 1,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Like :func:`chunked_divergence`, with the teacher given as its top-k logits.

    ``top_indices`` / ``top_logits`` ``[M, K]`` hold the teacher's K largest logits for the
    ``M`` counted positions (``groups >= 0``) in flattened order. The teacher distribution is
    approximated by the softmax of those K logits (renormalised top-k, zero elsewhere); the
    student keeps its full-vocabulary softmax. ``forward_kl`` and ``jsd`` are exact for that
    approximated teacher; ``reverse_kl`` is undefined (the teacher is zero off its top-k).
    """
    vocab = student_logits.shape[-1]
    student = student_logits.reshape(-1, vocab)
    groups = groups.reshape(-1).to(student.device)
    top_indices, top_logits = top_indices.to(student.device), top_logits.to(student.device)
    if int((groups >= 0).sum()) != top_indices.shape[0]:
        raise ValueError("the cached teacher positions do not match the counted positions")
    if top_indices.numel() and int(top_indices.max()) >= vocab:
        raise ValueError(f"cached teacher ids reach {int(top_indices.max())}, beyond the "
                         f"student's {vocab} logits; rebuild the cache with --student")
    total = torch.zeros(num_groups, dtype=torch.float32, device=student.device)
    needs_grad = torch.is_grad_enabled() and student.requires_grad
    done = 0
    for lo in range(0, student.shape[0], chunk_size):
        g = groups[lo : lo + chunk_size]
        keep = (g >= 0).nonzero(as_tuple=True)[0]
        n = keep.numel()
        if n == 0:
            continue
        args = (student[lo : lo + chunk_size], keep, top_indices[done : done + n],
                top_logits[done : done + n], g[keep], num_groups, divergence, temperature, beta)
        done += n
        if needs_grad:
            total = total + checkpoint(_sparse_chunk_sums, *args, use_reentrant=False)
        else:
            total = total + _sparse_chunk_sums(*args)
    return total
