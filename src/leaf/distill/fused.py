"""The distillation loss from final hidden states, never holding ``[tokens, vocabulary]`` logits.

When a causal LM's logits are exactly ``head(body(...).last_hidden_state)`` (the check is
:func:`leaf.model_parts.chunkable_head`: no soft-capping, logit scale or other transform), the
loss of :mod:`leaf.distill.objective` can start from the student's final hidden states ``h``
``[tokens, H]`` and its output-layer weight ``W`` ``[V, H]`` instead of its logits. For
``chunk_size`` counted positions at a time, :func:`fused_distill_loss`

1. computes the chunk's student logits ``z = h W^T (+ b)`` and the teacher's (from the teacher's
   own hidden states and output layer, from its full logits, or from a top-k cache),
2. computes each position's divergence ``D_i`` (and cross-entropy) in float32 and, in closed form,
   the gradient of ``sum_i c_i D_i (+ c_ce CE_i)`` with respect to ``z``,
3. turns that gradient into the hidden states' gradient (``g W``) and adds it to the weight's
   (``g^T h``) and bias's,

then drops the chunk. So the gradients are computed during the forward pass, for a loss whose
per-group weights ``c`` are known in advance (the trainer knows the token counts of the whole
optimisation step before the loss), and backward only scales them by the incoming scalar gradient.
Only the positions that count (target tokens) ever go through the output layer.

Precision: the products with the output layers (both models' logits, ``g W``, ``g^T h``) run in
the inputs' dtype (or autocast's; the kernels sum in float32); the softmax, divergence and
logit gradient of every chunk run in float32. The weight's gradient is summed over the chunks in
the weight's dtype (``weight_grad_dtype="weight"``, the default: float32 for a float32 or
mixed-precision student) or in float32 (``"float32"``: for a bfloat16 weight twice the memory of
that sum and a float32 product, for a smaller error; ``benchmarks/precision_kl.py`` measures both).

Memory: the weight's gradient (as large as ``W``; training needs it anyway), the hidden states'
gradient (``tokens x H``), and three or four ``rows x V`` float32 buffers that every chunk reuses
(a fresh tensor of that size per chunk would pay its page faults each time), ``rows`` being
``chunk_size`` for float32 inputs and half of it for 16-bit ones (:func:`chunk_rows`: a chunk
then takes the bytes of ``chunk_size`` positions in 16 bits). Time: the same two matrix products
per model as logits-based training, nothing recomputed.

Gradients (each multiplied by ``t^2`` like the divergence, ``u = z / t``, ``p_S = softmax(u)``):
forward KL ``t (p_S - p_T)``; reverse KL ``t p_S (log p_S - log p_T - D / t^2)``; JSD
``t p_S (g - <p_S, g>)`` with ``g = (1 - beta) (log p_S - log m)``; cross-entropy (at temperature
1) ``softmax(z) - onehot(y)``; the top-k cache's forward KL ``t (p_S sum_k q_k - q)`` (``q`` the
renormalised teacher top-k, scattered to its ids). The top-k cache's JSD takes the chunk's gradient
from autograd. Tests compare values and gradients with the obvious full-logits loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from leaf.distill.losses import DIVERGENCES, _sparse_values
from leaf.model_parts import execution_device

TeacherLogits = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class FusedLoss:
    """``loss``: ``sum_g coefficients[g] * sums[g] + ce_coefficient * ce`` (differentiable);
    ``sums``: per-group divergence sums ``[num_groups]`` and ``ce``: the summed cross-entropy
    (both float32, detached)."""

    loss: torch.Tensor
    sums: torch.Tensor
    ce: torch.Tensor


def teacher_from_logits(logits: torch.Tensor) -> TeacherLogits:
    """Teacher logits of the requested flat positions, cut from a full ``[..., V_T]`` tensor
    (in its dtype: the loss reads them into float32)."""
    flat = logits.detach().reshape(-1, logits.shape[-1])

    def rows(positions: torch.Tensor) -> torch.Tensor:
        return flat.index_select(0, positions.to(flat.device))

    return rows


def teacher_from_hidden(hidden: torch.Tensor, head: torch.nn.Module, device=None) -> TeacherLogits:
    """Teacher logits ``head(hidden[positions])``, computed on demand, returned on ``device``
    in the head's output dtype (the loss reads them into float32).

    ``head`` is called as a module, so accelerate's offload and device-map hooks apply.
    """
    flat = hidden.detach().reshape(-1, hidden.shape[-1])
    head_device = execution_device(head)

    def rows(positions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = flat.index_select(0, positions.to(flat.device)).to(head_device)
            z = head(h)
        return z.to(device or positions.device)

    return rows


def _log_softmax_(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log_softmax(z / t)`` written into ``z`` (``z`` float32 and contiguous; it must not
    share memory with anything still needed: the kernel reads each row before writing it)."""
    if temperature != 1.0:
        z.div_(temperature)
    return torch.log_softmax(z, -1, out=z)


class _Space:
    """Float32 ``[rows, V]`` buffers that every chunk of one call reuses by name: a fresh
    tensor of that size per chunk is mapped anew and pays its page faults each time."""

    def __init__(self, device) -> None:
        self.device = device
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, rows: int, cols: int) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols:
            buf = torch.empty(rows, cols, dtype=torch.float32, device=self.device)
            self.buffers[name] = buf
        return buf[:rows]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ``sum_v a_v b_v`` without a ``[m, V]`` product tensor."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _forward_kl_chunk(z, zt, coef, t, need_grad, space):
    """:func:`_dense_chunk`'s forward KL in ``z`` and two ``space`` buffers, no fresh ``[m, V]``
    tensor (each would cost its page faults again at every chunk)."""
    m, vocab = z.shape
    log_s = _log_softmax_(z, t)
    zt = zt[:, :vocab]
    if zt.dtype != torch.float32 or not zt.is_contiguous():  # else fresh float32: use it
        zt = space.take("teacher", m, vocab).copy_(zt)
    log_t = _log_softmax_(zt, t)
    p_t = torch.exp(log_t, out=space.take("p", m, vocab))
    diff = log_t.sub_(log_s)
    values = _dot(p_t, diff)
    bad = ~torch.isfinite(values)
    if bool(bad.any()):  # 0 log 0 = 0: where p_T is 0 and a log-probability infinite
        rows = bad.nonzero(as_tuple=True)[0]
        values[rows] = _dot(p_t[rows], diff[rows].masked_fill(p_t[rows] == 0, 0.0))
    values = values * t * t
    if not need_grad:
        return values, None
    return values, log_s.exp_().sub_(p_t).mul_((coef * t).unsqueeze(-1))


def _dense_chunk(z, zt, coef, divergence, t, beta, need_grad, space):
    """``(D [m], grad of sum_i coef_i D_i w.r.t. z or None)``: ``z`` float32, overwritten (the
    gradient may live in it); ``zt`` the teacher's logits in any dtype."""
    if divergence == "forward_kl":
        return _forward_kl_chunk(z, zt, coef, t, need_grad, space)
    vocab = z.shape[-1]
    log_s = _log_softmax_(z, t)
    log_t = _log_softmax_(zt[:, :vocab].float().contiguous(), t)
    scale = (coef * t).unsqueeze(-1)
    if divergence == "reverse_kl":
        p_s = log_s.exp()
        diff = log_t.neg_().add_(log_s).masked_fill_(p_s == 0, 0.0)  # log p_S - log p_T
        values = _dot(p_s, diff)
        if not need_grad:
            return values * t * t, None
        return values * t * t, diff.sub_(values.unsqueeze(-1)).mul_(p_s).mul_(scale)
    if beta <= 0.0 or beta >= 1.0:  # the mixture equals one side: JSD is 0
        return z.new_zeros(z.shape[0]), (torch.zeros_like(z) if need_grad else None)
    log_m = torch.logaddexp(log_t + math.log(beta), log_s + math.log(1.0 - beta))
    p_t = log_t.exp()
    term_t = _dot(p_t, log_t.sub_(log_m).masked_fill_(p_t == 0, 0.0))
    del p_t
    p_s = log_s.exp()
    diff_s = log_s.sub_(log_m).masked_fill_(p_s == 0, 0.0)  # log p_S - log m
    del log_m
    values = (beta * term_t + (1.0 - beta) * _dot(p_s, diff_s)) * t * t
    if not need_grad:
        return values, None
    g = diff_s.mul_(1.0 - beta)
    return values, g.sub_(_dot(p_s, g).unsqueeze(-1)).mul_(p_s).mul_(scale)


def _sparse_chunk(z, top_idx, top_logits, coef, divergence, t, beta, need_grad):
    """Like :func:`_dense_chunk`, the teacher given as its renormalised top-k."""
    top_idx = top_idx.long()
    if divergence == "jsd":  # the student's mass outside the top-k: let autograd differentiate
        with torch.enable_grad():
            rows = z.detach().requires_grad_(need_grad)
            values = _sparse_values(rows, top_idx, top_logits, divergence, t, beta)
            if not need_grad:
                return values.detach(), None
            (grad,) = torch.autograd.grad((values * coef).sum(), rows)
        return values.detach(), grad
    if divergence != "forward_kl":
        raise ValueError(f"{divergence} needs the full teacher distribution, not a top-k cache")
    log_s = _log_softmax_(z, t)
    log_q = F.log_softmax(top_logits.float() / t, dim=-1)
    q = log_q.exp()
    diff = (log_q - log_s.gather(-1, top_idx)).masked_fill_(q == 0, 0.0)
    values = (q * diff).sum(-1) * t * t
    if not need_grad:
        return values, None
    scale = (coef * t).unsqueeze(-1)
    grad = log_s.exp_().mul_(q.sum(-1, keepdim=True)).scatter_add_(-1, top_idx, -q)
    return values, grad.mul_(scale)


def _cross_entropy_chunk(z, targets, coef, need_grad):
    """``(CE [m], grad of coef * sum CE w.r.t. z or None)`` at temperature 1; ``z`` is kept."""
    lse = torch.logsumexp(z, -1)
    ce = lse - z.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not need_grad:
        return ce, None
    grad = (z - lse.unsqueeze(-1)).exp_()
    grad.scatter_add_(-1, targets.unsqueeze(-1), grad.new_full((z.shape[0], 1), -1.0))
    return ce, grad.mul_(coef)


WEIGHT_GRAD_DTYPES = ("float32", "weight")


def chunk_rows(chunk_size: int, dtype: torch.dtype) -> int:
    """Positions per chunk: ``chunk_size`` for float32 inputs, fewer in proportion for 16-bit
    ones, whose chunks are computed in float32 (so a chunk takes the bytes that a chunk of
    ``chunk_size`` positions would take in the inputs' dtype)."""
    return max(1, chunk_size * torch.finfo(dtype).bits // 32)


def compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype of the output layer's products: autocast's where it is on, else the inputs'."""
    kind = hidden.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return torch.promote_types(hidden.dtype, weight.dtype)


class _FusedHeadLoss(torch.autograd.Function):
    """Scalar loss of the counted positions' hidden states through the output layer.

    ``chunk_fn(z, lo, hi, need_grad, space)`` receives the float32 logits of rows ``lo:hi``
    (storage it may overwrite) and a :class:`_Space`, and returns ``(loss part, d part / d z or
    None)``, the gradient float32. The three products run in the output layer's dtype
    (:func:`compute_dtype`); the weight's gradient is summed over the chunks in the weight's
    dtype or, with ``weight_grad_dtype="float32"``, in float32. The gradients of the hidden states,
    the weight and the bias are formed during forward; backward scales them by the incoming
    gradient in place (so the graph can be walked once only).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, rows, chunk_fn, weight_grad_dtype):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        need = need_h or need_w or need_b
        grad_h = torch.empty_like(hidden) if need_h else None
        acc_dtype = weight.dtype if weight_grad_dtype == "weight" else torch.float32
        grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) \
            if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) \
            if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        space = _Space(hidden.device)
        for lo in range(0, hidden.shape[0], rows):
            h = hidden[lo : lo + rows]
            m = h.shape[0]
            zf = F.linear(h, weight, bias)  # in the compute dtype
            low = zf.dtype
            if low != torch.float32:  # a copy, and the 16-bit logits freed at once
                zf = space.take("student", m, zf.shape[1]).copy_(zf)
            part, g = chunk_fn(zf, lo, lo + m, need, space)
            total += part
            if not need:
                continue
            gc = g.to(low)  # the gradient in the products' dtype
            if need_h:
                grad_h[lo : lo + m] = torch.mm(gc, weight)  # autocast casts weight
            if need_w:
                if acc_dtype == gc.dtype:
                    grad_w.addmm_(gc.t(), h.to(gc.dtype))
                else:  # a 16-bit product into a float32 sum: take the float32 gradient
                    grad_w.addmm_(g.t(), h.to(acc_dtype))
            if need_b:
                grad_b += g.sum(0)
            del g, gc, zf
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        ctx.used = False
        return total

    @staticmethod
    def backward(ctx, grad_total):
        if ctx.used:
            raise RuntimeError("the fused distillation loss can be differentiated once "
                               "(no retain_graph)")
        ctx.used = True
        grad_h, grad_w, grad_b = ctx.saved_tensors
        if grad_h is not None:
            grad_h.mul_(grad_total.to(grad_h.dtype))
        if grad_w is not None:
            grad_w = grad_w.mul_(grad_total.to(grad_w.dtype)).to(ctx.dtypes[0])
        if grad_b is not None:
            grad_b = grad_b.mul_(grad_total).to(ctx.dtypes[1])
        return grad_h, grad_w, grad_b, None, None, None


def fused_distill_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    groups: torch.Tensor,
    coefficients: torch.Tensor,
    *,
    teacher: TeacherLogits | None = None,
    top_k: tuple[torch.Tensor, torch.Tensor] | None = None,
    bias: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    ce_coefficient: float | torch.Tensor = 0.0,
    num_groups: int = 2,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    chunk_size: int = 256,
    weight_grad_dtype: str = "weight",
) -> FusedLoss:
    """Weighted divergence sums (and cross-entropy) from the student's final hidden states.

    ``hidden`` ``[..., H]``: the student's final hidden states (the output layer's input);
    ``weight`` ``[V, H]`` and ``bias`` ``[V]``: its output layer (tied input embeddings are fine:
    the gradient reaches the shared parameter). ``groups`` (long, ``hidden``'s leading shape):
    each position's group in ``[0, num_groups)``, ``-1`` for positions that do not count;
    ``coefficients`` ``[num_groups]``: each group's weight in the loss. The teacher is either
    ``teacher``, a function from flat position indices (into ``groups.reshape(-1)``) to fresh
    logits ``[n, V_T >= V]`` (any floating dtype) on ``hidden``'s device (:func:`teacher_from_hidden`,
    :func:`teacher_from_logits`; logits beyond ``V`` are dropped), or ``top_k`` = (ids, logits)
    ``[M, K]`` of the counted positions in flattened order, as
    :func:`leaf.distill.losses.chunked_sparse_divergence` takes them. ``labels`` (same shape as
    ``groups``, already shifted): the gold next tokens, for the cross-entropy term weighted by
    ``ce_coefficient`` over the counted positions.

    Precision: the output layer's three products (both models' logits, the gradients of the
    hidden states and of the weight) run in the inputs' dtype (autocast's under autocast; the
    kernels sum in float32); each chunk's softmax, divergence and logit gradient are float32;
    chunks hold ``chunk_size`` positions in float32 and fewer in proportion for 16-bit inputs
    (:func:`chunk_rows`). ``weight_grad_dtype``: the weight's gradient summed over the chunks in
    ``"weight"``, the weight's own dtype (the default; for a bfloat16 weight a 16-bit product and
    one rounding per chunk), or in ``"float32"`` (for a 16-bit weight its product then runs in
    float32 and the sum is cast once, at the end: twice the sum's memory, a smaller error).

    Returns a :class:`FusedLoss`. The divergences are those of
    :func:`leaf.distill.losses.token_divergence` (temperature, teacher's extra logits dropped).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if weight_grad_dtype not in WEIGHT_GRAD_DTYPES:
        raise ValueError(f"weight_grad_dtype must be one of {WEIGHT_GRAD_DTYPES}, got "
                         f"{weight_grad_dtype!r}")
    if (teacher is None) == (top_k is None):
        raise ValueError("give exactly one of teacher (logits) or top_k (a top-k cache)")
    dim = hidden.shape[-1]
    vocab = weight.shape[0]
    device = hidden.device
    flat = hidden.reshape(-1, dim)
    groups = groups.reshape(-1).to(device)
    if groups.shape[0] != flat.shape[0]:
        raise ValueError("hidden states and groups must cover the same positions")
    positions = (groups >= 0).nonzero(as_tuple=True)[0]
    kept_groups = groups.index_select(0, positions)
    coef_rows = coefficients.to(device, torch.float32).index_select(0, kept_groups)
    ce_coef = torch.as_tensor(ce_coefficient, dtype=torch.float32, device=device)
    with_ce = labels is not None and bool(ce_coef != 0)
    targets = labels.reshape(-1).to(device).index_select(0, positions) if with_ce else None
    if top_k is not None:
        top_idx, top_val = (x.to(device) for x in top_k)
        if top_idx.shape[0] != positions.shape[0]:
            raise ValueError("the cached teacher positions do not match the counted positions")
        if top_idx.numel() and int(top_idx.max()) >= vocab:
            raise ValueError(f"cached teacher ids reach {int(top_idx.max())}, beyond the "
                             f"student's {vocab} logits; rebuild the cache with --student")
    values = torch.zeros(positions.shape[0], dtype=torch.float32, device=device)
    ce_values = torch.zeros_like(values) if with_ce else None

    def chunk_fn(z, lo, hi, need_grad, space):
        coef = coef_rows[lo:hi]
        grad = None
        part = torch.zeros((), dtype=torch.float32, device=device)
        if with_ce:  # first: the divergence overwrites z
            ce, grad = _cross_entropy_chunk(z, targets[lo:hi], ce_coef, need_grad)
            ce_values[lo:hi] = ce.detach()
            part = part + ce_coef * ce.sum()
        if top_k is None:
            zt = teacher(positions[lo:hi])
            if zt.shape[-1] < vocab:
                raise ValueError(f"teacher has {zt.shape[-1]} logits, fewer than the "
                                 f"student's {vocab}")
            d, g = _dense_chunk(z, zt, coef, divergence, temperature, beta, need_grad,
                                space)
            del zt
        else:
            d, g = _sparse_chunk(z, top_idx[lo:hi], top_val[lo:hi], coef, divergence,
                                 temperature, beta, need_grad)
        values[lo:hi] = d.detach()
        part = part + (coef * d).sum()
        if need_grad:
            grad = g if grad is None else grad.add_(g)
        return part.detach(), grad

    kept = flat.index_select(0, positions)
    rows = chunk_rows(chunk_size, compute_dtype(kept, weight))
    if torch.is_grad_enabled() and (kept.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        loss = _FusedHeadLoss.apply(kept, weight, bias, rows, chunk_fn, weight_grad_dtype)
    else:
        with torch.no_grad():
            loss = _FusedHeadLoss.forward(_NoGrad(), kept, weight, bias, rows, chunk_fn,
                                          weight_grad_dtype)
    sums = torch.zeros(num_groups, dtype=torch.float32, device=device)
    sums.index_add_(0, kept_groups, values)
    ce_sum = ce_values.sum() if with_ce else torch.zeros((), dtype=torch.float32, device=device)
    return FusedLoss(loss=loss, sums=sums, ce=ce_sum)


class _NoGrad:
    needs_input_grad = (False, False, False)

    def save_for_backward(self, *tensors) -> None:
        pass
