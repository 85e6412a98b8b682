"""The model card (``README.md``) written into every distilled model's directory: what was
distilled from what, on which data, with which loss settings, and by which leaf."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from leaf import __version__

CARD = "README.md"


def _value(v: Any) -> str:
    return "-" if v is None or v == "" else f"`{v}`"


def model_card(args: Any, stats: Mapping[str, int], last_log: Mapping[str, Any] | None = None,
               ) -> str:
    """Markdown text of the card for ``args`` (:class:`leaf.distill.config.DistillArguments`)
    and the training rows' ``stats`` (originals, counterfactuals, dropped, truncated)."""

    student = args.student_model
    lam = ("not used (uniform mixing: every target token weighs the same)"
           if args.mixing == "uniform" else f"{args.hybrid_lambda:g}")
    rows = [
        ("teacher", _value(args.teacher_model or f"cached top-k logits: {args.teacher_cache}")),
        ("student (starting point)", _value(student)),
        ("training data", _value(args.train_file)),
        ("original rows", str(stats.get("original", 0))),
        ("counterfactual rows", str(stats.get("counterfactual", 0))
         + ("" if args.use_counterfactuals else " (use_counterfactuals: false: plain KD)")),
        ("rows dropped (rejected by verification)", str(stats.get("dropped_unverified", 0))),
        ("rows truncated to max_length", str(stats.get("truncated", 0))),
        ("mixing", _value(args.mixing)
         + (f", {args.counterfactual_ratio:g} counterfactuals per original"
            if args.mixing == "paired" else "")),
        ("lambda (hybrid_lambda)", lam),
        ("divergence, temperature", f"`{args.divergence}`, {args.temperature:g}"),
        ("cross-entropy weight", f"{args.ce_weight:g}"),
        ("learning rate, schedule", f"{args.learning_rate:g}, `{getattr(args.lr_scheduler_type, 'value', args.lr_scheduler_type)}`"),
        ("training length", f"{args.max_steps} steps" if args.max_steps and args.max_steps > 0
         else f"{args.num_train_epochs:g} epochs"),
        ("batch size per device, accumulation", f"{args.per_device_train_batch_size}, "
                                                 f"{args.gradient_accumulation_steps}"),
        ("seed", str(args.seed)),
        ("LoRA", _value(args.lora) if args.lora else "no (every parameter trained)"),
        ("leaf version", f"`{__version__}`"),
    ]
    if last_log:
        rows.append(("final training loss", f"{last_log.get('train_loss', float('nan')):.4g}"
                     if isinstance(last_log.get("train_loss"), int | float) else "-"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    if args.mixing == "uniform":
        loss = ("The loss is the mean of `D(teacher, student)` over every target token of the "
                "original and counterfactual rows together (uniform mixing; D: the divergence "
                "below)")
    else:
        loss = ("The loss is `lambda * D(teacher, student | original) + (1 - lambda) * "
                "D(... | counterfactual)` in every batch (paired mixing; D: the divergence below)")
    return f"""---
library_name: transformers
tags:
- leaf
- knowledge-distillation
- causal-attention-distillation
---

# Student distilled with LeaF

This model is the student `{student}` distilled from the teacher
`{args.teacher_model or args.teacher_cache}` by leaf
(LeaF: causal attention distillation via gradient-guided token pruning). {loss}; a
counterfactual is an original sample with the tokens the student leans on and the teacher
ignores removed.

| setting | value |
|---|---|
{table}

Files: the model and tokenizer (Hugging Face format, safetensors), `trainer_state.json` (the
loss curve: loss, loss_kd, loss_cd per logging step) and `counterfactual_usage.json` (how often
each counterfactual row was seen). Load it with
`AutoModelForCausalLM.from_pretrained("<this directory>")`; evaluate it with
`leaf eval --model <this directory> --bench BENCH.jsonl --out OUT`.
"""


def write_model_card(output_dir: str | Path, args: Any, stats: Mapping[str, int],
                     last_log: Mapping[str, Any] | None = None) -> Path:
    """Write ``output_dir/README.md`` (replacing an earlier card) and return its path."""
    path = Path(output_dir) / CARD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(CARD + ".tmp")
    tmp.write_text(model_card(args, stats, last_log), encoding="utf-8")
    tmp.replace(path)
    return path


def card_for(trainer) -> Path:
    """Write the card of a :class:`leaf.distill.trainer.DistillTrainer` that has trained."""
    stats = getattr(trainer.train_dataset, "stats", {}) or {}
    history = trainer.state.log_history or []
    return write_model_card(trainer.args.output_dir, trainer.args, stats,
                            history[-1] if history else None)


def use_leaf_card(trainer) -> None:
    """Make ``trainer.create_model_card`` (called by ``push_to_hub`` before the upload) write
    leaf's card, so the hub gets the same README.md as the local directory."""
    def create_model_card(*_args, **_kwargs) -> None:
        if trainer.is_world_process_zero():
            card_for(trainer)

    trainer.create_model_card = create_model_card
