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


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _execution_device(module) -> torch.device:
    """Where a module runs: its accelerate hook's device when offloaded, else its weight's."""
    hook_device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if hook_device is not None:
        return torch.device(hook_device)
    return module.weight.device


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
    device = _execution_device(embed)
    # inference_mode(False) and clone(): also callable from inside torch.inference_mode()
    with _frozen_eval(model), torch.inference_mode(False), torch.enable_grad():
        input_ids = input_ids.to(device).clone()
        attention_mask = attention_mask.to(device).clone()
        labels = labels.clone()
        position_ids = position_ids_from_mask(attention_mask)
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
        # token t is predicted from the logits at t - 1, when both positions are real tokens
        predicted = real[:, 1:] & real[:, :-1]
        in_loss = (lab[:, 1:] != IGNORE_INDEX) & predicted
        targets = torch.where(lab != IGNORE_INDEX, lab, ids)[:, 1:]
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
        if counts.any():
            (grad,) = torch.autograd.grad(loss.sum(), embeds)
            saliency = grad.float().norm(dim=-1)
        else:
            saliency = embeds.new_zeros(embeds.shape[:2], dtype=torch.float32)
    return SaliencyOutput(
        saliency=saliency * attention_mask.bool(),
        nll=nll.float().to(device),
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
