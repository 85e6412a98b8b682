"""Input-gradient saliency (paper eq. 1) and per-token NLL from one forward pass.

For a model M and a sequence whose response tokens carry labels,

    L(M)   = mean over the response tokens of -log p_M(y_t | x, y_<t)     (one sample)
    g_i(M) = || dL(M) / de(x_i) ||_2                                       (every position i)

where ``e(x_i)`` is the input embedding of token i. Only the gradient with respect to the
embeddings is taken (``torch.autograd.grad`` on a leaf copy of them, with the parameters'
``requires_grad`` switched off for the call), so no parameter ever receives a ``.grad`` and no
activation is kept for weight gradients. The model is put in eval mode for the call (no
dropout) and its previous mode and flags are restored afterwards.

A batch is scored at once: the loss that is differentiated is the *sum* of the per-sample means,
so each sample's gradient is exactly its own (samples do not interact through the loss, and
padding is masked out of attention and given its own position ids, so left and right padding
agree).

The output layer is applied in chunks when it is safe to: the model body (``get_decoder()``,
else ``base_model``) runs once and gives the final hidden states; the output embeddings
(``get_output_embeddings()``) then turn ``chunk_size`` positions at a time into logits, with
the gradient of the loss taken per chunk with respect to those hidden states, and one
``autograd.grad(hidden, embeds, grad_hidden)`` carries it back to the embeddings. No
``[B, T, V]`` logits tensor is ever held. Only response positions need the gradient; the NLL
of the other real positions is computed the same way under ``no_grad``; padding is skipped.
This is valid only when the model's logits are exactly ``output_embeddings(hidden)``, so
:func:`leaf.model_parts.chunkable_head` accepts only causal-LM classes of known architectures
(:data:`~leaf.model_parts.CHUNKABLE_MODEL_TYPES`) whose config sets none of the known logit
transforms (:data:`~leaf.model_parts.LOGIT_TRANSFORM_FIELDS`: Gemma-2's
``final_logit_softcapping``, Cohere's ``logit_scale``, Granite's ``logits_scaling``, ...);
anything else takes the full-logits path (one forward pass of the whole model), which gives the
same numbers with more memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from leaf.model_parts import chunkable_head, execution_device

IGNORE_INDEX = -100
DEFAULT_CHUNK_SIZE = 256  # positions per chunk of the output layer


@dataclass
class SaliencyOutput:
    """Per-position results for a batch ``[B, T]``, float32, on the embedding's device."""

    saliency: torch.Tensor  # g_t = ||dL/de(x_t)||_2; 0 on padding
    nll: torch.Tensor  # -log p(x_t | x_<t) (the label where one is given); 0 for the first real token and padding
    loss: torch.Tensor  # [B] per-sample mean response cross-entropy L


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded row starts at 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


@contextmanager
def _frozen_eval(model):
    """Eval mode and no parameter gradients for the duration; restore both afterwards."""
    was_training = model.training
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)


def saliency_and_nll(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> SaliencyOutput:
    """Gradient-norm saliency ``g`` and per-token NLL for a padded batch.

    ``labels`` follow the Hugging Face convention: same shape as ``input_ids``, the target token
    at the position it is predicted for, ``-100`` where there is no loss (prompt, padding). A
    row without any label gets zero saliency. Works for models split with ``device_map``:
    inputs go to the embedding layer's device, labels to the logits' device.

    ``chunk_size``: positions per chunk of the output layer (see the module docstring); ``None``
    or ``0`` computes the full logits in one forward pass of the whole model. Models whose
    logits are not simply ``output_embeddings(hidden)`` always take the full path.
    """
    parts = chunkable_head(model) if chunk_size else None
    embed = model.get_input_embeddings()
    device = execution_device(embed)
    # inference_mode(False) and clone(): also callable from inside torch.inference_mode()
    with _frozen_eval(model), torch.inference_mode(False), torch.enable_grad():
        input_ids = input_ids.to(device).clone()
        attention_mask = attention_mask.to(device).clone()
        labels = labels.clone()
        position_ids = position_ids_from_mask(attention_mask)
        embeds = embed(input_ids).detach().requires_grad_(True)
        inputs = dict(inputs_embeds=embeds, attention_mask=attention_mask,
                      position_ids=position_ids, use_cache=False)
        if parts is None:
            grad, nll, loss = _full_logits(model, inputs, input_ids, attention_mask, labels)
        else:
            grad, nll, loss = _chunked_head(*parts, inputs, input_ids, attention_mask, labels,
                                            int(chunk_size))
        saliency = (grad.float().norm(dim=-1) if grad is not None
                    else embeds.new_zeros(embeds.shape[:2], dtype=torch.float32))
    return SaliencyOutput(
        saliency=saliency * attention_mask.bool(),
        nll=nll.float().to(device),
        loss=loss.detach().to(device),
    )


def _targets(input_ids, attention_mask, labels, device):
    """``predicted, in_loss, targets``, each ``[B, T-1]``: what position t+1 is scored on."""
    lab = labels.to(device)
    ids = input_ids.to(device)
    real = attention_mask.to(device).bool()
    # token t is predicted from the logits at t - 1, when both positions are real tokens
    predicted = real[:, 1:] & real[:, :-1]
    in_loss = (lab[:, 1:] != IGNORE_INDEX) & predicted
    targets = torch.where(lab != IGNORE_INDEX, lab, ids)[:, 1:]
    return predicted, in_loss, targets


def _full_logits(model, inputs, input_ids, attention_mask, labels):
    """The whole model's ``[B, T, V]`` logits at once; returns ``(grad or None, nll, loss)``."""
    logits = model(**inputs).logits
    predicted, in_loss, targets = _targets(input_ids, attention_mask, labels, logits.device)
    shifted = logits[:, :-1]
    # the graph keeps only the response rows of the logits; log-softmax in >= fp32
    ce = F.cross_entropy(_at_least_fp32(shifted[in_loss]), targets[in_loss], reduction="none")
    counts = in_loss.sum(1)
    rows = in_loss.nonzero()[:, 0]
    loss = ce.new_zeros(len(counts)).index_add(0, rows, ce) / counts.clamp(min=1)
    with torch.no_grad():
        nll = F.cross_entropy(
            _at_least_fp32(shifted.detach()).flatten(0, 1), targets.flatten(), reduction="none"
        ).view(targets.shape)
        nll = torch.cat([nll.new_zeros(nll.shape[0], 1), torch.where(predicted, nll, 0.0)], 1)
    del logits, shifted
    grad = None
    if counts.any():
        (grad,) = torch.autograd.grad(loss.sum(), inputs["inputs_embeds"])
    return grad, nll, loss


def _head_nll(head, hidden_rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-log p(target)`` per row from the output layer; log-softmax in >= fp32."""
    logits = head(hidden_rows)
    return F.cross_entropy(_at_least_fp32(logits), targets.to(logits.device), reduction="none")


def _chunked_head(body, head, inputs, input_ids, attention_mask, labels, chunk: int):
    """Body once, output layer per chunk of positions; returns ``(grad or None, nll, loss)``.

    The loss positions are taken ``chunk`` at a time with the gradient of their weighted
    cross-entropy (weight ``1 / n_b`` for sample b's ``n_b`` response tokens, so the sum is
    ``sum_b L_b``) with respect to the hidden states; the other real positions only need their
    NLL and are taken under ``no_grad``. Padding positions are never sent through the head.
    The hidden-state gradients are then pushed through the body in one ``autograd.grad``.
    """
    hidden = body(**inputs).last_hidden_state
    predicted, in_loss, targets = _targets(input_ids, attention_mask, labels, hidden.device)
    b, t, h = hidden.shape
    counts = in_loss.sum(1)
    flat = hidden.detach()[:, :-1]
    nll = torch.zeros(b, t - 1, dtype=torch.float32, device=hidden.device)
    loss = torch.zeros(b, dtype=torch.float32, device=hidden.device)
    # loss positions: gradient wanted
    pos = in_loss.nonzero()
    grad_rows = torch.zeros(len(pos), h, dtype=hidden.dtype, device=hidden.device)
    weight = 1.0 / counts.clamp(min=1).float()
    for lo in range(0, len(pos), chunk):
        rows, cols = pos[lo:lo + chunk].unbind(1)
        hc = flat[rows, cols].requires_grad_(True)
        ce = _head_nll(head, hc, targets[rows, cols])  # no chunk of logits outlives its step
        (grad_rows[lo:lo + chunk],) = torch.autograd.grad(
            (ce * weight[rows].to(ce.device)).sum(), hc)
        ce = ce.detach().float().to(hidden.device)
        nll[rows, cols] = ce
        loss.index_add_(0, rows, ce)
    loss = loss / counts.clamp(min=1)
    # other predicted positions: NLL only
    with torch.no_grad():
        rest = (predicted & ~in_loss).nonzero()
        for lo in range(0, len(rest), chunk):
            rows, cols = rest[lo:lo + chunk].unbind(1)
            nll[rows, cols] = _head_nll(head, flat[rows, cols], targets[rows, cols]).float().to(
                hidden.device)
    nll = torch.cat([nll.new_zeros(b, 1), nll], 1)
    grad = None
    if len(pos):
        grad_hidden = torch.zeros_like(hidden)
        grad_hidden[pos[:, 0], pos[:, 1]] = grad_rows
        (grad,) = torch.autograd.grad(hidden, inputs["inputs_embeds"], grad_hidden)
    return grad, nll, loss


def input_saliency(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """``[B, T]`` per-token L2 norm of d(mean response CE)/d(input embedding) (paper's g_i)."""
    return saliency_and_nll(model, input_ids, attention_mask, labels).saliency


def pad_batch(
    sequences: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    pad_id: int = 0,
    side: str = "right",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad token ids and labels to one length; returns ``input_ids, attention_mask, labels``."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    lab = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    for row, (seq, lbl) in enumerate(zip(sequences, labels)):
        n = len(seq)
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        ids[row, cols] = torch.as_tensor(list(seq), dtype=torch.long)
        lab[row, cols] = torch.as_tensor(list(lbl), dtype=torch.long)
        mask[row, cols] = 1
    return ids, mask, lab
