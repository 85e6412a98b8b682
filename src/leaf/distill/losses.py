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
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


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
