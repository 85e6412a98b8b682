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

The loss itself is :class:`leaf.distill.objective.DistillObjective` (the formula is written once,
in :func:`leaf.distill.objective.combine`). The trainer gives it the token counts of the whole
step (``get_batch_samples`` sees the step's micro-batches before the first forward pass), adds
what it returns to the running means it logs, and sums the whole evaluation set for
``eval_loss``.

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
import statistics
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import seed_worker

from leaf.distill.mixing import MixingBatchSampler
from leaf.distill.objective import LOGGED_MEANS, DistillObjective
from leaf.distill.running import RunningMeans

USAGE_FILE = "counterfactual_usage.json"


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
        has_counterfactuals = data is not None and any(
            data[i]["is_counterfactual"] for i in range(len(data)))
        self.mixing_batch_sampler: MixingBatchSampler | None = None
        self.counterfactual_usage: dict[str, Any] | None = None
        self._step_counts: torch.Tensor | None = None
        self._running = RunningMeans(LOGGED_MEANS, device=self.args.device)
        self._eval_sums = torch.zeros(5, device=self.args.device)  # LossParts.totals() summed
        self.add_callback(_SamplerEpoch(self))
        zero3 = self.is_deepspeed_enabled and getattr(
            self.accelerator.state.deepspeed_plugin, "zero_stage", 3) == 3
        self.objective = DistillObjective(
            self.args, self.accelerator.unwrap_model(self.model), teacher=teacher,
            teacher_cache=teacher_cache, fsdp=self.is_fsdp_enabled, zero3=zero3,
            has_counterfactuals=has_counterfactuals)

    @property
    def loss_path(self) -> str:
        """``"hidden"`` or ``"logits"``: where the loss starts (``kd_loss_path``)."""
        return self.objective.path

    @property
    def _teacher_parts(self):  # the teacher's (body, output layer) when its logits allow it
        return self.objective.teacher_parts

    @property
    def effective_lambda(self) -> float | None:
        """See :attr:`leaf.distill.objective.DistillObjective.effective_lambda`."""
        return self.objective.effective_lambda

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

    def _over_processes(self, tensor: torch.Tensor, reduction: str) -> torch.Tensor:
        """``tensor`` summed or averaged over the processes (itself with one process)."""
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor, reduction=reduction)

    # ---- the loss: the objective's, over the token counts of the whole step ----
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._step_counts = self.objective.step_counts(
            batches, device, partial(self._over_processes, reduction="sum"))
        self._running.add(self.objective.step_running_values(self._step_counts))
        return batches, num_items

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        training = model.training and self._step_counts is not None
        if training:  # DDP averages the processes' gradients: scale by their number
            parts, outputs = self.objective(model, inputs, self._step_counts,
                                            float(self.accelerator.num_processes))
            self._running.add(parts.running_values(), per_process=True)
        else:
            parts, outputs = self.objective(model, inputs)
            if not model.training:  # evaluation: the whole set's sums, for eval_loss
                self._eval_sums += parts.totals().to(self._eval_sums.device)
        return (parts.loss, outputs) if return_outputs else parts.loss

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None,
                        ignore_keys=None, metric_key_prefix="eval"):
        self._eval_sums.zero_()
        output = super().evaluation_loop(dataloader, description, prediction_loss_only,
                                         ignore_keys, metric_key_prefix)
        totals = self._over_processes(self._eval_sums.clone(), "sum")
        output.metrics.update(self.objective.eval_metrics(totals, metric_key_prefix))
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and "eval_loss" not in logs:  # every process logs at the same steps
            logs.update(self._running.take(partial(self._over_processes, reduction="mean")))
            if self.effective_lambda is not None:  # so a run's record says its lambda
                logs["hybrid_lambda"] = self.effective_lambda
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
