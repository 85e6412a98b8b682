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
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class SaliencyOutput:
    """Per-position results for a batch ``[B, T]``, float32, on the embedding's device."""

    saliency: torch.Tensor  # g_t = ||dL/de(x_t)||_2; 0 on padding
    nll: torch.Tensor  # -log p(x_t | x_<t) (the label where one is given); 0 for the first real token and padding
    loss: torch.Tensor  # [B] per-sample mean response cross-entropy L


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded row starts at 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


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
) -> SaliencyOutput:
    """Gradient-norm saliency ``g`` and per-token NLL for a padded batch.

    ``labels`` follow the Hugging Face convention: same shape as ``input_ids``, the target token
    at the position it is predicted for, ``-100`` where there is no loss (prompt, padding). A
    row without any label gets zero saliency. Works for models split with ``device_map``:
    inputs go to the embedding layer's device, labels to the logits' device.
    """
    embed = model.get_input_embeddings()
    device = embed.weight.device
    input_ids = input_ids.to(device)
    attention_mask = attention_mask.to(device)
    position_ids = position_ids_from_mask(attention_mask)
    with _frozen_eval(model), torch.enable_grad():
        embeds = embed(input_ids).detach().requires_grad_(True)
        logits = model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).logits
        lab = labels.to(logits.device)
        ids = input_ids.to(logits.device)
        real = attention_mask.to(logits.device).bool()
        targets = torch.where(lab != IGNORE_INDEX, lab, ids)[:, 1:]
        # token t is predicted from the logits at t - 1; fp32 for a stable log-softmax
        ce = F.cross_entropy(
            logits[:, :-1].float().flatten(0, 1), targets.flatten(), reduction="none"
        ).view(targets.shape)
        ce = torch.cat([ce.new_zeros(ce.shape[0], 1), ce], dim=1)
        # a position has a prediction when it and the one before it are real tokens
        predicted = real & torch.cat([real.new_zeros(real.shape[0], 1), real[:, :-1]], dim=1)
        ce = ce * predicted
        in_loss = (lab != IGNORE_INDEX) & predicted
        counts = in_loss.sum(1)
        loss = (ce * in_loss).sum(1) / counts.clamp(min=1)
        if counts.any():
            (grad,) = torch.autograd.grad(loss.sum(), embeds)
            saliency = grad.float().norm(dim=-1)
        else:
            saliency = embeds.new_zeros(embeds.shape[:2], dtype=torch.float32)
    return SaliencyOutput(
        saliency=saliency * attention_mask.bool(),
        nll=ce.detach().to(device),
        loss=loss.detach().to(device),
    )


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
