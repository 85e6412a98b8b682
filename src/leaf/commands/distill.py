"""``leaf distill``: causal attention distillation of a student from a teacher."""

from __future__ import annotations

from pathlib import Path

from leaf.errors import LeafError

NAME = "distill"
HELP = "distil the teacher into the student on original and counterfactual rows"
DESCRIPTION = """\
Train the student with L = lambda * KL(teacher || student | X) + (1 - lambda) * KL(... | X \\ A)
on counterfactuals.jsonl (original and counterfactual rows, written by `leaf prune`).
With `mixing: paired` (default) every batch holds originals and counterfactuals in a fixed
proportion, so the formula holds in every step and an epoch is a pass over the originals;
`mixing: uniform` is the authors' released behaviour (no lambda, every token weighs the same).

Reads  FILE.yaml: leaf's fields (teacher_model, student_model, train_file, hybrid_lambda,
       mixing, counterfactual_ratio, divergence, temperature, ce_weight, teacher_cache, lora,
       max_length, ...) and any transformers.TrainingArguments field (output_dir, ...).
Writes output_dir/: the final model and tokenizer (Hugging Face format, safetensors),
       trainer_state.json (log_history with loss, loss_kd, loss_cd, share_cd, weight_cd,
       hybrid_lambda), counterfactual_usage.json (how often each row was seen),
       checkpoint-N/ folders.

Any field can be overridden after the config, with TrainingArguments' own names:
  leaf distill --config run.yaml --learning_rate 2e-5 --max_steps 100 --output_dir out/
A run resumes from the last checkpoint-N in output_dir automatically; pass
--resume_from_checkpoint DIR to choose one. Multi-GPU: accelerate launch -m leaf.cli distill ...
(see docs/distillation.md). `leaf distill --show-fields` lists every field.
(Python: leaf.stages.distill_arguments and leaf.stages.distill.)"""


def add_arguments(parser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with the run's settings")
    parser.add_argument("--show-fields", action="store_true",
                        help="list every config field (leaf's and TrainingArguments') and exit")
    parser.set_defaults(accepts_extra=True)


def run(args) -> int:
    import yaml

    if args.show_fields:
        from transformers import HfArgumentParser

        from leaf.distill.config import DistillArguments

        HfArgumentParser(DistillArguments, prog="leaf distill --config FILE.yaml").print_help()
        return 0
    if not args.config:
        raise LeafError("--config FILE.yaml is required")
    path = Path(args.config)
    if not path.is_file():
        raise LeafError(f"{path}: config file not found")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LeafError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise LeafError(f"{path}: expected a mapping of field: value")

    from leaf.stages import distill, distill_arguments

    dargs = distill_arguments(config, list(args.extra or []))
    trainer = distill(dargs)
    if trainer.is_world_process_zero():
        print(f"saved the distilled student to {dargs.output_dir}")
    return 0
