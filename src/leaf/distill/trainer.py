"""``DistillTrainer``: causal attention distillation as a ``transformers.Trainer``.

The loss of one optimisation batch (docs/distillation.md; "one batch" is everything that feeds
one optimizer step, over gradient accumulation and processes, so the result does not depend on
how the batch is split over devices). With ``mixing: paired``::

    L_kd = sum_{original rows r} sum_{target positions i of r} D_i  /  N_kd
    L_cd = sum_{counterfactual rows r} sum_{target positions i of r} D_i  /  N_cd
    L    = lambda * L_kd + (1 - lambda) * L_cd   (+ ce_weight * CE over all target tokens)

and every batch holds both kinds of row (:mod:`leaf.distill.mixing`), so the formula holds in
every step; with no counterfactual rows at all, ``L = L_kd`` (plain KD, lambda unused). With
``mixing: uniform`` (the authors' released behaviour) ``L = sum_i D_i / (N_kd + N_cd)``: one
token-weighted mean over both kinds. ``D_i`` is the token-level divergence
(:mod:`leaf.distill.losses`; forward KL by default) between teacher and student next-token
distributions at position ``i``, both models reading the same (original or pruned) input.

Logged beside ``loss``: ``loss_kd``, ``loss_cd``, ``share_cd`` (the part of the distillation
loss carried by counterfactual tokens), ``weight_cd`` (the weight they had) and, under paired
mixing, the ``hybrid_lambda`` in force. At the end of training ``counterfactual_usage.json`` in
``output_dir`` says how often each row was trained on. ``eval_loss`` is the same loss over the
whole evaluation set taken as one batch.

By default (``kd_loss_path: auto``) the loss starts from the models' final hidden states and goes
through their output layers chunk by chunk (:mod:`leaf.distill.fused`), so no ``[batch, tokens,
vocabulary]`` tensor exists; models whose logits are not ``output_layer(hidden)``, and FSDP or
DeepSpeed ZeRO-3 runs, compute it from full logits (:func:`leaf.distill.losses.chunked_divergence`).

Everything else (devices, DDP/FSDP/DeepSpeed through accelerate, mixed precision, gradient
checkpointing, checkpoints and resume, logging integrations) is the stock ``Trainer``.
"""

from __future__ import annotations

import json
import logging
import statistics
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import seed_worker

from leaf.distill.fused import fused_distill_loss, teacher_from_hidden, teacher_from_logits
from leaf.distill.losses import chunked_cross_entropy, chunked_divergence
from leaf.distill.mixing import MixingBatchSampler
from leaf.errors import LeafError
from leaf.model_parts import chunkable_head

logger = logging.getLogger(__name__)

KD, CD = 0, 1  # group ids: standard (original rows) and counterfactual distillation
USAGE_FILE = "counterfactual_usage.json"
# what the trainer adds up between two logging steps (one slot each)
_L_KD, _L_CD, _PART_CD, _L, _WEIGHT_CD, _STEPS, _STEPS_KD, _STEPS_CD = range(8)


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


def term_weights(counts: torch.Tensor, mixing: str, hybrid_lambda: float) -> torch.Tensor:
    """``[w_kd, w_cd]``, the weights of ``L_kd`` and ``L_cd`` in the loss of a batch with these
    target counts: paired ``[lambda, 1 - lambda]`` when both kinds are present, ``[1, 0]`` or
    ``[0, 1]`` when only one is; uniform ``[N_kd, N_cd] / (N_kd + N_cd)``."""
    counts = counts.float()
    if mixing == "uniform":
        return counts / counts.sum().clamp(min=1)
    present = counts > 0
    if bool(present.all()):
        return torch.tensor([hybrid_lambda, 1.0 - hybrid_lambda], device=counts.device)
    return present.float()


def distill_loss(
    sums: torch.Tensor, counts: torch.Tensor, mixing: str, hybrid_lambda: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(L, L_kd, L_cd, part_cd)`` from per-group divergence sums and target counts.

    ``L = w_kd * L_kd + w_cd * L_cd`` with :func:`term_weights` (for uniform this is the
    token-weighted mean ``(sum_kd + sum_cd) / (N_kd + N_cd)``); ``part_cd = w_cd * L_cd``. An
    absent group's mean is 0. Linear in ``sums``: the per-micro-batch values (local sums, the
    step's global counts) add up to the step's.
    """
    present = counts > 0
    means = torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums))
    weights = term_weights(counts, mixing, hybrid_lambda).to(sums.device)
    return (weights * means).sum(), means[KD], means[CD], weights[CD] * means[CD]


class _SamplerEpoch(TrainerCallback):
    """Tells the mixing sampler which epoch begins, from the step count (so also on resume,
    whatever dataloader wrappers the resume adds)."""

    def __init__(self, trainer: DistillTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        sampler = self.trainer.mixing_batch_sampler
        if sampler is not None:
            sampler.set_epoch(state.global_step // sampler.steps_per_epoch)


class DistillTrainer(Trainer):
    """A ``Trainer`` whose loss is LeaF's distillation loss and whose batches are formed by
    :class:`leaf.distill.mixing.MixingBatchSampler`.

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
        data = self.train_dataset
        self.has_counterfactuals = data is not None and any(
            data[i]["is_counterfactual"] for i in range(len(data)))
        self.mixing_batch_sampler: MixingBatchSampler | None = None
        self.counterfactual_usage: dict[str, Any] | None = None
        self._step_counts: torch.Tensor | None = None
        self._logged = torch.zeros(8, device=self.args.device)
        self._eval_sums = torch.zeros(5, device=self.args.device)  # sum_kd, sum_cd, N_kd, N_cd, CE
        self.add_callback(_SamplerEpoch(self))
        self.loss_path, self._student_parts = self._choose_loss_path()
        self._teacher_parts = chunkable_head(teacher) if teacher is not None else None

    def _choose_loss_path(self):
        """``("hidden", (body, head))`` when the loss can start from the student's hidden states
        (``kd_loss_path`` auto or hidden), else ``("logits", None)``."""
        wanted = self.args.kd_loss_path
        if wanted == "logits":
            return "logits", None
        parts = chunkable_head(self.accelerator.unwrap_model(self.model))
        reason = None
        if parts is None:
            reason = ("the student's logits are not its output layer applied to its final hidden "
                      "states (a logit transform such as soft-capping, an output layer that is not "
                      "a plain linear layer, e.g. one adapted by LoRA, or an architecture leaf has "
                      "not checked)")
        elif self.is_fsdp_enabled:
            reason = "FSDP shards the output layer's weight"
        elif self.is_deepspeed_enabled and getattr(
                self.accelerator.state.deepspeed_plugin, "zero_stage", 3) == 3:
            reason = "DeepSpeed ZeRO-3 partitions the output layer's weight"
        if reason is None:
            return "hidden", parts
        if wanted == "hidden":
            raise LeafError(f"kd_loss_path: hidden is not possible here: {reason}; use "
                            "kd_loss_path: auto or logits")
        logger.info("distillation loss from full logits: %s", reason)
        return "logits", None

    @property
    def effective_lambda(self) -> float | None:
        """The lambda of the training loss: ``hybrid_lambda`` under paired mixing, 1.0 when the
        training set has no counterfactual row (plain KD), ``None`` under uniform mixing."""
        if self.args.mixing == "uniform":
            return None
        return self.args.hybrid_lambda if self.has_counterfactuals else 1.0

    # ---- batches ----
    def make_batch_sampler(self) -> MixingBatchSampler:
        """The training set's :class:`MixingBatchSampler` for these arguments."""
        data, args = self.train_dataset, self.args
        return MixingBatchSampler(
            [bool(data[i]["is_counterfactual"]) for i in range(len(data))],
            getattr(data, "origins", None) or [None] * len(data),
            mixing=args.mixing, per_device=self._train_batch_size,
            micro_batches=args.gradient_accumulation_steps * self.accelerator.num_processes,
            counterfactual_ratio=args.counterfactual_ratio,
            seed=args.data_seed if args.data_seed is not None else args.seed,
            drop_last=args.dataloader_drop_last,
        )

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        args = self.args
        self.mixing_batch_sampler = self.make_batch_sampler()
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=self.mixing_batch_sampler,
            collate_fn=self._get_collator_with_removed_columns(self.data_collator, "Training"),
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            multiprocessing_context=args.dataloader_multiprocessing_context,
            prefetch_factor=args.dataloader_prefetch_factor,
            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers,
                                   rank=args.process_index),
        )
        return self.accelerator.prepare(loader)

    # ---- the global token counts of one optimisation step ----
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(2, device=device)
        for batch in batch_samples:
            counts += count_targets(batch).to(device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        present = counts > 0
        if self.args.mixing == "paired" and self.has_counterfactuals and not bool(present.all()):
            raise RuntimeError(f"paired mixing: an optimizer batch without both kinds of row "
                               f"(target tokens {counts.tolist()})")
        self._step_counts = counts
        weights = term_weights(counts, self.args.mixing, self.args.hybrid_lambda)
        logged = self._logged
        logged[_WEIGHT_CD] += weights[CD].to(logged.device)
        logged[_STEPS] += 1
        logged[_STEPS_KD] += present[KD].to(logged.device).float()
        logged[_STEPS_CD] += present[CD].to(logged.device).float()
        return batch_samples, num_items

    # ---- the loss ----
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        is_cf = inputs.pop("is_counterfactual")
        cache_row = inputs.pop("cache_row", None)
        groups = target_groups(labels, is_cf)
        args = self.args
        training = model.training and self._step_counts is not None
        if training:  # counts of the whole step, over accumulation and processes
            counts, scale = self._step_counts, float(self.accelerator.num_processes)
        else:
            counts, scale = count_targets({"labels": labels, "is_counterfactual": is_cf}), 1.0
        if self.loss_path == "hidden":
            outputs, hidden = self._student_hidden(model, inputs)
            counts = counts.to(hidden.device)
            # L is linear in the per-group sums: its coefficients are known before the loss
            weights = term_weights(counts, args.mixing, args.hybrid_lambda).to(hidden.device)
            coefficients = torch.where(counts > 0, weights / counts.clamp(min=1), 0.0) * scale
            ce_coefficient = args.ce_weight / counts.sum().clamp(min=1) * scale
            head = self._student_parts[1]
            teacher, top_k = None, None
            if self.teacher is not None:
                teacher = self._teacher_rows(inputs, hidden.device)
            else:
                top_k = self.teacher_cache.top_k(groups, cache_row)
            fused = fused_distill_loss(
                hidden, head.weight, groups, coefficients, teacher=teacher, top_k=top_k,
                bias=head.bias, labels=shifted_labels(labels) if args.ce_weight else None,
                ce_coefficient=ce_coefficient, num_groups=2, divergence=args.divergence,
                temperature=args.temperature, beta=args.jsd_beta, chunk_size=args.kd_chunk_size,
            )
            sums, ce, loss = fused.sums, fused.ce, fused.loss
            distillation, l_kd, l_cd, part_cd = distill_loss(sums, counts, args.mixing,
                                                             args.hybrid_lambda)
        else:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            logits = outputs.logits
            if self.teacher is not None:
                sums = chunked_divergence(
                    logits, self._teacher_logits(inputs), groups, num_groups=2,
                    divergence=args.divergence, temperature=args.temperature, beta=args.jsd_beta,
                    chunk_size=args.kd_chunk_size,
                )
            else:
                sums = self.teacher_cache.divergence_sums(logits, groups, cache_row, args)
            counts = counts.to(sums.device)
            loss, l_kd, l_cd, part_cd = distill_loss(sums, counts, args.mixing, args.hybrid_lambda)
            distillation = loss
            ce = torch.zeros((), device=sums.device)
            if args.ce_weight:
                ce = chunked_cross_entropy(
                    logits, shifted_labels(labels), chunk_size=args.kd_chunk_size
                )
                loss = loss + args.ce_weight * ce / counts.sum().clamp(min=1)
            loss = loss * scale
        if training:
            parts = torch.stack([l_kd, l_cd, part_cd, distillation]).detach() * scale
            self._logged[:4] += parts.to(self._logged.device)
        elif not model.training:  # evaluation: the whole set's sums, for eval_loss
            self._eval_sums += torch.cat([sums.detach(), counts, ce.detach().view(1)]).to(
                self._eval_sums.device)
        return (loss, outputs) if return_outputs else loss

    def _student_hidden(self, model, inputs):
        """The student's forward pass (through any DDP wrapper) without its logits: the output
        layer sees no position (``logits_to_keep`` empty); the body's final hidden states are
        taken with a forward hook."""
        body = self._student_parts[0]
        captured = []

        def keep(module, args, output):
            captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state")
                            else output[0])

        ids = inputs["input_ids"]
        handle = body.register_forward_hook(keep)
        try:
            outputs = model(input_ids=ids, attention_mask=inputs["attention_mask"],
                            logits_to_keep=torch.zeros(0, dtype=torch.long, device=ids.device),
                            use_cache=False)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"the student's body ran {len(captured)} times in one forward pass")
        return outputs, captured[0]

    @torch.no_grad()
    def _teacher_rows(self, inputs: dict[str, Any], device):
        """The teacher's logits at given positions, on demand: from its final hidden states and
        output layer when its logits are ``head(hidden)``, else cut from its full logits."""
        if self._teacher_parts is None:
            return teacher_from_logits(self._teacher_logits(inputs))
        body, head = self._teacher_parts
        first = self.teacher.get_input_embeddings().weight.device
        hidden = body(input_ids=inputs["input_ids"].to(first),
                      attention_mask=inputs["attention_mask"].to(first),
                      use_cache=False).last_hidden_state
        return teacher_from_hidden(hidden, head, device)

    @torch.no_grad()
    def _teacher_logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        device = self.teacher.get_input_embeddings().weight.device
        out = self.teacher(
            input_ids=inputs["input_ids"].to(device),
            attention_mask=inputs["attention_mask"].to(device),
        )
        return out.logits

    # ---- evaluation: the loss of the whole set ----
    def evaluation_loop(self, dataloader, description, prediction_loss_only=None,
                        ignore_keys=None, metric_key_prefix="eval"):
        self._eval_sums.zero_()
        output = super().evaluation_loop(dataloader, description, prediction_loss_only,
                                         ignore_keys, metric_key_prefix)
        totals = self._eval_sums.clone()
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        sums, counts, ce = totals[:2], totals[2:4], totals[4]
        if counts.sum() > 0:
            loss, l_kd, l_cd, _ = distill_loss(sums, counts, self.args.mixing,
                                               self.args.hybrid_lambda)
            loss = loss + self.args.ce_weight * ce / counts.sum()
            output.metrics[f"{metric_key_prefix}_loss"] = loss.item()
            for g, name in ((KD, "loss_kd"), (CD, "loss_cd")):
                if counts[g] > 0:
                    output.metrics[f"{metric_key_prefix}_{name}"] = (l_kd, l_cd)[g].item()
        return output

    # ---- logging ----
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and "eval_loss" not in logs:
            acc = self._logged.clone()
            if self.accelerator.num_processes > 1:  # every process logs at the same steps
                acc[:4] = self.accelerator.reduce(acc[:4].clone(), reduction="mean")
            for g, name, steps in ((_L_KD, "loss_kd", _STEPS_KD), (_L_CD, "loss_cd", _STEPS_CD)):
                if acc[steps] > 0:
                    logs[name] = round((acc[g] / acc[steps]).item(), 6)
            if acc[_L] > 0:
                logs["share_cd"] = round((acc[_PART_CD] / acc[_L]).item(), 6)
            if acc[_STEPS] > 0:
                logs["weight_cd"] = round((acc[_WEIGHT_CD] / acc[_STEPS]).item(), 6)
            if self.effective_lambda is not None:  # so a run's record says its lambda
                logs["hybrid_lambda"] = self.effective_lambda
            self._logged.zero_()
        super().log(logs, start_time)

    # ---- what the run trained on ----
    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if self.mixing_batch_sampler is not None:
            self.counterfactual_usage = self.usage_record()
            if self.is_world_process_zero() and self.args.output_dir:
                path = Path(self.args.output_dir) / USAGE_FILE
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(self.counterfactual_usage, indent=1) + "\n")
        return output

    def usage_record(self) -> dict[str, Any]:
        """How often each training row was in the batches of the steps run so far (recounted
        from the sampler's order, so a resumed run counts the steps before the resume too)."""
        sampler = self.mixing_batch_sampler
        seen = sampler.usage(self.state.global_step)
        data = self.train_dataset
        ids = getattr(data, "ids", None) or [str(i) for i in range(len(data))]

        def summary(rows: list[int]) -> dict[str, Any]:
            counts = [seen[i] for i in rows]
            if not counts:
                return {"rows": 0}
            return {"rows": len(counts), "min": min(counts), "median": statistics.median(counts),
                    "max": max(counts), "never_seen": sum(c == 0 for c in counts)}

        return {
            "mixing": self.args.mixing,
            "hybrid_lambda": self.effective_lambda,
            "steps": self.state.global_step,
            "steps_per_epoch": sampler.steps_per_epoch,
            # paired: rows_per_step originals plus counterfactuals_per_step; uniform: rows
            "rows_per_step": sampler.rows_per_step,
            "counterfactuals_per_step": sampler.cf_per_step,
            "original": summary(sampler.originals),
            "counterfactual": {**summary(sampler.counterfactuals),
                               "seen": {ids[i]: seen[i] for i in sampler.counterfactuals}},
        }
