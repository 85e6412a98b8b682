"""``DistillTrainer``: causal attention distillation as a ``transformers.Trainer``.

The loss of one optimisation batch (docs/distillation.md; "one batch" is everything that feeds
one optimizer step: ``per_device_train_batch_size x gradient_accumulation_steps x processes``,
so the result does not depend on how the batch is split over devices)::

    L_kd = sum_{original rows r} sum_{target positions i of r} D_i  /  N_kd
    L_cd = sum_{counterfactual rows r} sum_{target positions i of r} D_i  /  N_cd
    L    = lambda * L_kd + (1 - lambda) * L_cd   (+ ce_weight * CE over all target tokens)

``D_i`` is the token-level divergence (:mod:`leaf.distill.losses`; forward KL by default)
between teacher and student next-token distributions at position ``i``, both models reading
the same (original or pruned) input; ``N_kd`` and ``N_cd`` count target tokens. A term whose
rows are absent from the batch is dropped and the other keeps its weight. ``loss_kd`` and
``loss_cd`` are logged beside ``loss``, each averaged over the logged steps that had it.

Everything else (devices, DDP/FSDP/DeepSpeed through accelerate, mixed precision, gradient
checkpointing, checkpoints and resume, logging integrations) is the stock ``Trainer``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from leaf.distill.losses import chunked_cross_entropy, chunked_divergence

KD, CD = 0, 1  # group ids: standard (original rows) and counterfactual distillation


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels aligned with logits: position ``i`` predicts ``labels[i + 1]``; last is ignored."""
    pad = torch.full_like(labels[:, :1], -100)
    return torch.cat([labels[:, 1:], pad], dim=1)


def target_groups(labels: torch.Tensor, is_counterfactual: torch.Tensor) -> torch.Tensor:
    """Per logit position: ``KD`` / ``CD`` for target positions of original / counterfactual
    rows, ``-1`` elsewhere."""
    target = shifted_labels(labels) != -100
    kind = is_counterfactual.to(labels.device).long().view(-1, 1).expand_as(labels)
    return torch.where(target, kind, torch.full_like(labels, -1))


def count_targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[N_kd, N_cd]``: target tokens of original and counterfactual rows in one batch."""
    groups = target_groups(batch["labels"], batch["is_counterfactual"])
    return torch.stack([(groups == KD).sum(), (groups == CD).sum()]).float()


def hybrid_loss(
    sums: torch.Tensor, counts: torch.Tensor, hybrid_lambda: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(L, L_kd, L_cd)`` from per-group divergence sums and target counts.

    ``L = lambda * L_kd + (1 - lambda) * L_cd``; an absent term (count 0) contributes 0 and
    the other keeps its weight.
    """
    present = counts > 0
    means = torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums))
    weights = torch.tensor([hybrid_lambda, 1.0 - hybrid_lambda], device=sums.device)
    return (weights * means).sum(), means[KD], means[CD]


class DistillTrainer(Trainer):
    """A ``Trainer`` whose loss is LeaF's hybrid distillation loss.

    ``teacher``: a frozen causal LM (put in eval mode, gradients off) read online, or ``None``
    when ``teacher_cache`` (a :class:`leaf.distill.cache.TeacherCache`) supplies top-k teacher
    logits. ``args`` is a :class:`leaf.distill.config.DistillArguments`.
    """

    # compute_loss normalises by the token counts of the whole optimisation batch itself
    loss_is_scaled_for_ga = True

    def __init__(self, *args, teacher=None, teacher_cache=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if (teacher is None) == (teacher_cache is None):
            raise ValueError("give exactly one of teacher (online) or teacher_cache (offline)")
        self.teacher = teacher
        self.teacher_cache = teacher_cache
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        self._step_counts: torch.Tensor | None = None
        self._term_sums = torch.zeros(2, device=self.args.device)
        self._term_steps = torch.zeros(2, device=self.args.device)

    # ---- the global token counts of one optimisation step ----
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(2, device=device)
        for batch in batch_samples:
            counts += count_targets(batch).to(device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        self._step_counts = counts
        self._term_steps += (counts > 0).float()
        return batch_samples, num_items

    # ---- the loss ----
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        is_cf = inputs.pop("is_counterfactual")
        cache_row = inputs.pop("cache_row", None)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logits = outputs.logits
        groups = target_groups(labels, is_cf)
        args = self.args
        if self.teacher is not None:
            sums = chunked_divergence(
                logits, self._teacher_logits(inputs), groups, num_groups=2,
                divergence=args.divergence, temperature=args.temperature, beta=args.jsd_beta,
                chunk_size=args.kd_chunk_size,
            )
        else:
            sums = self.teacher_cache.divergence_sums(logits, groups, cache_row, args)
        training = model.training and self._step_counts is not None
        if training:  # counts of the whole step, over accumulation and processes
            counts, scale = self._step_counts, float(self.accelerator.num_processes)
        else:
            counts, scale = count_targets({"labels": labels, "is_counterfactual": is_cf}), 1.0
        counts = counts.to(sums.device)
        loss, l_kd, l_cd = hybrid_loss(sums, counts, args.hybrid_lambda)
        if args.ce_weight:
            ce = chunked_cross_entropy(
                logits, shifted_labels(labels), chunk_size=args.kd_chunk_size
            )
            loss = loss + args.ce_weight * ce / counts.sum().clamp(min=1)
        loss = loss * scale
        if training:
            self._term_sums += torch.stack([l_kd, l_cd]).detach().to(self._term_sums.device) * scale
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _teacher_logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        device = self.teacher.get_input_embeddings().weight.device
        out = self.teacher(
            input_ids=inputs["input_ids"].to(device),
            attention_mask=inputs["attention_mask"].to(device),
        )
        return out.logits

    # ---- logging ----
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and "eval_loss" not in logs:
            sums = self._term_sums
            if self.accelerator.num_processes > 1:  # every process logs at the same steps
                sums = self.accelerator.reduce(sums.clone(), reduction="mean")
            steps = self._term_steps.clone()
            for g, name in ((KD, "loss_kd"), (CD, "loss_cd")):
                if steps[g] > 0:
                    logs[name] = round((sums[g] / steps[g]).item(), 6)
            logs["hybrid_lambda"] = self.args.hybrid_lambda  # so a run's record says its lambda
            self._term_sums.zero_()
            self._term_steps.zero_()
        super().log(logs, start_time)
