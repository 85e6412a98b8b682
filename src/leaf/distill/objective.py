"""LeaF's distillation objective: the one place the loss of a step is written and computed.

For the target positions of one optimisation step (over gradient accumulation and processes),
with ``S_kd`` / ``S_cd`` the summed token divergences of original / counterfactual rows, ``N_kd``
/ ``N_cd`` their counts and ``CE`` the summed cross-entropy of the gold tokens::

    L = w_kd * S_kd / N_kd + w_cd * S_cd / N_cd  +  ce_weight * CE / (N_kd + N_cd)

with the term weights ``w`` of :func:`term_weights` (paired: ``lambda, 1 - lambda``; uniform:
each kind's share of the target tokens). :func:`combine` writes this formula; everything else
derives from it. :class:`DistillObjective` computes the sums either from the models' final hidden
states, chunk by chunk through the output layers (:func:`leaf.distill.fused.fused_distill_loss`,
which needs each token's weight in advance: :func:`token_coefficients`, the gradient of
:func:`combine`), or from full logits (:func:`leaf.distill.losses.chunked_divergence`, or the
teacher cache's top-k logits), and returns the loss with its named parts (:class:`LossParts`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from leaf.distill.fused import fused_distill_loss, teacher_from_hidden, teacher_from_logits
from leaf.distill.losses import chunked_cross_entropy, chunked_divergence
from leaf.errors import LeafError
from leaf.model_parts import chunkable_head

logger = logging.getLogger(__name__)

KD, CD = 0, 1  # group ids: standard (original rows) and counterfactual distillation
# logged beside loss at each logging step, as running means (LossParts.running_values,
# DistillObjective.step_running_values)
LOGGED_MEANS = ("loss_kd", "loss_cd", "share_cd", "weight_cd")


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
    """``[w_kd, w_cd]``, the weights of ``L_kd`` and ``L_cd`` in the loss of a step with these
    target counts: paired ``[lambda, 1 - lambda]`` when both kinds are present, ``[1, 0]`` or
    ``[0, 1]`` when only one is; uniform ``[N_kd, N_cd] / (N_kd + N_cd)``."""
    counts = counts.float()
    if mixing == "uniform":
        return counts / counts.sum().clamp(min=1)
    present = counts > 0
    if bool(present.all()):
        return torch.tensor([hybrid_lambda, 1.0 - hybrid_lambda], device=counts.device)
    return present.float()


@dataclass
class Terms:
    """The loss of a step and its parts, from its sums (:func:`combine`)."""

    loss: torch.Tensor  # distillation + the cross-entropy term
    distillation: torch.Tensor  # w_kd * L_kd + w_cd * L_cd
    loss_kd: torch.Tensor  # L_kd (0 when the step has no original row)
    loss_cd: torch.Tensor  # L_cd (0 when it has no counterfactual row)
    part_cd: torch.Tensor  # w_cd * L_cd

    def detach(self) -> Terms:
        return Terms(*(t.detach() for t in (self.loss, self.distillation, self.loss_kd,
                                             self.loss_cd, self.part_cd)))


def combine(sums: torch.Tensor, ce: torch.Tensor, counts: torch.Tensor, mixing: str,
            hybrid_lambda: float, ce_weight: float) -> Terms:
    """The loss formula, written once: ``L = w_kd * L_kd + w_cd * L_cd + ce_weight * CE / N``
    from per-group divergence sums, the summed cross-entropy and the step's target counts.

    ``L_g = S_g / N_g`` (0 for an absent group), ``w`` from :func:`term_weights` (for uniform
    the distillation part is the token-weighted mean ``(S_kd + S_cd) / (N_kd + N_cd)``). Linear
    in ``sums`` and ``ce``: the values of the micro-batches of a step (their own sums, the
    step's counts) add up to the step's.
    """
    present = counts > 0
    means = torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums))
    weights = term_weights(counts, mixing, hybrid_lambda).to(sums.device)
    distillation = (weights * means).sum()
    loss = distillation + ce_weight * ce / counts.sum().clamp(min=1)
    return Terms(loss, distillation, means[KD], means[CD], weights[CD] * means[CD])


def token_coefficients(counts: torch.Tensor, mixing: str, hybrid_lambda: float,
                       ce_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c [2], c_ce)``: the weight one target token's divergence (per group) and its
    cross-entropy have in the loss of a step with these counts.

    The loss is linear in the sums and the cross-entropy, so these are its gradient with
    respect to them, taken from :func:`combine` itself rather than written a second time: the
    hidden-state path, which needs them before the loss, trains the loss the formula says.
    """
    sums = torch.zeros(2, device=counts.device, requires_grad=True)
    ce = torch.zeros((), device=counts.device, requires_grad=True)
    with torch.enable_grad():
        loss = combine(sums, ce, counts, mixing, hybrid_lambda, ce_weight).loss
        coefficients, ce_coefficient = torch.autograd.grad(loss, (sums, ce))
    return coefficients, ce_coefficient


@dataclass
class LossParts:
    """What :class:`DistillObjective` returns for one micro-batch.

    ``loss`` is differentiable and what backward uses (already multiplied by ``scale``, the
    number of processes in training: DDP averages their gradients). The other tensors are
    detached and unscaled: the :class:`Terms` of the micro-batch's sums over the step's
    counts, and the sums themselves.
    """

    loss: torch.Tensor
    terms: Terms
    sums: torch.Tensor  # [S_kd, S_cd]
    counts: torch.Tensor  # [N_kd, N_cd] the loss is normalised by
    ce: torch.Tensor  # summed cross-entropy (0 when ce_weight is 0)
    scale: float

    def running_values(self) -> dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """This micro-batch's share of the logged running means: ``name -> (value, weight)``
        (the step's parts add up over its micro-batches and processes)."""
        t, s = self.terms, self.scale
        return {"loss_kd": (t.loss_kd * s, None), "loss_cd": (t.loss_cd * s, None),
                "share_cd": (t.part_cd * s, t.distillation * s)}

    def totals(self) -> torch.Tensor:
        """``[S_kd, S_cd, N_kd, N_cd, CE]``: what evaluation adds up over the whole set."""
        return torch.cat([self.sums, self.counts, self.ce.view(1)])


class DistillObjective:
    """The distillation loss of :class:`leaf.distill.trainer.DistillTrainer`.

    ``args``: the :class:`leaf.distill.config.DistillArguments` (read at each call, so a changed
    setting applies at once); ``student``: the unwrapped student; the teacher is ``teacher``
    (online, frozen) or ``teacher_cache`` (a :class:`leaf.distill.cache.TeacherCache`).
    ``fsdp`` / ``zero3``: the output layer's weight is sharded, so the loss starts from logits.
    ``has_counterfactuals``: the training set has counterfactual rows (paired mixing then
    requires both kinds in every step).
    """

    def __init__(self, args, student, *, teacher=None, teacher_cache=None, fsdp: bool = False,
                 zero3: bool = False, has_counterfactuals: bool = True) -> None:
        self.args = args
        self.teacher = teacher
        self.teacher_cache = teacher_cache
        self.has_counterfactuals = has_counterfactuals
        self.path, self.student_parts = self._choose_path(student, fsdp, zero3)
        self.teacher_parts = chunkable_head(teacher) if teacher is not None else None

    def _choose_path(self, student, fsdp: bool, zero3: bool):
        """``("hidden", (body, head))`` when the loss can start from the student's hidden states
        (``kd_loss_path`` auto or hidden), else ``("logits", None)``."""
        wanted = self.args.kd_loss_path
        if wanted == "logits":
            return "logits", None
        parts = chunkable_head(student)
        reason = None
        if parts is None:
            reason = ("the student's logits are not its output layer applied to its final hidden "
                      "states (a logit transform such as soft-capping, an output layer that is not "
                      "a plain linear layer, e.g. one adapted by LoRA, or an architecture leaf has "
                      "not checked)")
        elif fsdp:
            reason = "FSDP shards the output layer's weight"
        elif zero3:
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

    # ---- the step ----
    def step_counts(self, batches: list[dict[str, torch.Tensor]], device,
                    sum_over_processes=None) -> torch.Tensor:
        """``[N_kd, N_cd]`` of a whole optimisation step: its micro-batches, summed over the
        processes by ``sum_over_processes``. Paired mixing with counterfactuals requires both."""
        counts = torch.zeros(2, device=device)
        for batch in batches:
            counts += count_targets(batch).to(device)
        if sum_over_processes is not None:
            counts = sum_over_processes(counts)
        if (self.args.mixing == "paired" and self.has_counterfactuals
                and not bool((counts > 0).all())):
            raise RuntimeError(f"paired mixing: an optimizer batch without both kinds of row "
                               f"(target tokens {counts.tolist()})")
        return counts

    def step_running_values(self, counts: torch.Tensor) -> dict[str, tuple[Any, Any]]:
        """The step's share of the logged running means (the same on every process):
        ``loss_kd`` / ``loss_cd`` are means over the steps holding that kind, ``weight_cd`` over
        all steps."""
        present = (counts > 0).float()
        weight_cd = term_weights(counts, self.args.mixing, self.args.hybrid_lambda)[CD]
        return {"loss_kd": (None, present[KD]), "loss_cd": (None, present[CD]),
                "weight_cd": (weight_cd, 1.0)}

    # ---- the loss ----
    def __call__(self, model, inputs: dict[str, Any], counts: torch.Tensor | None = None,
                 scale: float = 1.0) -> tuple[LossParts, Any]:
        """``(LossParts, the student's outputs)`` for a micro-batch; ``counts``: the step's target
        counts (default: the micro-batch's own, as in evaluation)."""
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        is_cf = inputs.pop("is_counterfactual")
        cache_row = inputs.pop("cache_row", None)
        groups = target_groups(labels, is_cf)
        if counts is None:
            counts = count_targets({"labels": labels, "is_counterfactual": is_cf})
        args = self.args
        gold = shifted_labels(labels) if args.ce_weight else None
        if self.path == "hidden":
            outputs, hidden = self._student_hidden(model, inputs)
            counts = counts.to(hidden.device)
            coefficients, ce_coefficient = token_coefficients(counts, args.mixing,
                                                              args.hybrid_lambda, args.ce_weight)
            head = self.student_parts[1]
            teacher, top_k = None, None
            if self.teacher is not None:
                teacher = self._teacher_rows(inputs, hidden.device)
            else:
                top_k = self.teacher_cache.top_k(groups, cache_row)
            fused = fused_distill_loss(
                hidden, head.weight, groups, coefficients * scale, teacher=teacher, top_k=top_k,
                bias=head.bias, labels=gold, ce_coefficient=ce_coefficient * scale, num_groups=2,
                divergence=args.divergence, temperature=args.temperature, beta=args.jsd_beta,
                chunk_size=args.kd_chunk_size, weight_grad_dtype=args.kd_weight_grad_dtype,
            )
            sums, ce, loss = fused.sums, fused.ce, fused.loss
            terms = combine(sums, ce, counts, args.mixing, args.hybrid_lambda, args.ce_weight)
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
            ce = torch.zeros((), device=sums.device)
            if args.ce_weight:
                ce = chunked_cross_entropy(logits, gold, chunk_size=args.kd_chunk_size)
            terms = combine(sums, ce, counts, args.mixing, args.hybrid_lambda, args.ce_weight)
            loss = terms.loss * scale
        return LossParts(loss, terms.detach(), sums.detach(), counts, ce.detach(), scale), outputs

    def eval_metrics(self, totals: torch.Tensor, prefix: str = "eval") -> dict[str, float]:
        """``{prefix}_loss`` (and ``_loss_kd`` / ``_loss_cd`` for the kinds present) of the
        whole evaluation set taken as one step, from its summed :meth:`LossParts.totals`."""
        sums, counts, ce = totals[:2], totals[2:4], totals[4]
        if not counts.sum() > 0:
            return {}
        args = self.args
        terms = combine(sums, ce, counts, args.mixing, args.hybrid_lambda, args.ce_weight)
        metrics = {f"{prefix}_loss": terms.loss.item()}
        for g, name, value in ((KD, "loss_kd", terms.loss_kd), (CD, "loss_cd", terms.loss_cd)):
            if counts[g] > 0:
                metrics[f"{prefix}_{name}"] = value.item()
        return metrics

    # ---- the models' forward passes ----
    def _student_hidden(self, model, inputs):
        """The student's forward pass (through any DDP wrapper) without its logits: the output
        layer sees no position (``logits_to_keep`` empty); the body's final hidden states are
        taken with a forward hook."""
        body = self.student_parts[0]
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
        if self.teacher_parts is None:
            return teacher_from_logits(self._teacher_logits(inputs))
        body, head = self.teacher_parts
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
