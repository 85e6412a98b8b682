"""``leaf distill``: causal attention distillation of a student from a teacher."""

from __future__ import annotations

from pathlib import Path

from leaf.errors import LeafError

NAME = "distill"
HELP = "distil the teacher into the student on original and counterfactual rows"
DESCRIPTION = """\
Train the student with L = lambda * KL(teacher || student | X) + (1 - lambda) * KL(... | X \\ A)
on counterfactuals.jsonl (original and counterfactual rows, written by `leaf prune`).
With `mixing: paired` every batch holds originals and counterfactuals in a fixed proportion,
so the formula holds in every step and an epoch is a pass over the originals; `mixing: uniform`
(the default) is the authors' released behaviour (no lambda, every token weighs the same).

Reads  CONFIG.yaml: leaf's fields (teacher_model, student_model, train_file, hybrid_lambda,
       mixing, counterfactual_ratio, divergence, temperature, ce_weight, teacher_cache, lora,
       max_length, ...) and any transformers.TrainingArguments field (output_dir, ...).
       teacher_model / student_model: a directory, a hub id or testbed:FAMILY/ROLE.
Writes output_dir/: the final model and tokenizer (Hugging Face format, safetensors),
       README.md (a model card: teacher, student, data, lambda, counterfactual counts),
       trainer_state.json (log_history with loss, loss_kd, loss_cd, share_cd, weight_cd,
       hybrid_lambda), counterfactual_usage.json (how often each row was seen),
       checkpoint-N/ folders.

Any field can be overridden after the config, with TrainingArguments' own names:
  leaf distill run.yaml --learning_rate 2e-5 --max_steps 100 --output_dir out/
(`--config run.yaml` works too; put the overrides after the config.) push_to_hub: true with
hub_model_id: ORG/NAME uploads the model and its card at the end (TrainingArguments' own
fields; needs `huggingface-cli login`).
A run resumes from the last checkpoint-N in output_dir automatically; pass
--resume_from_checkpoint DIR to choose one. Multi-GPU: accelerate launch -m leaf.cli distill ...
(see docs/distillation.md). `leaf distill --show-fields` lists every field, leaf's first.
(Python: leaf.stages.distill_arguments and leaf.stages.distill.)"""


def add_arguments(parser) -> None:
    # CONFIG.yaml is read from the first of the unparsed arguments (see run): an argparse
    # positional would also swallow the value of a field override (--output_dir DIR)
    parser.usage = "%(prog)s CONFIG.yaml [--FIELD VALUE ...] | --show-fields"
    parser.add_argument("--config", dest="config_flag", metavar="CONFIG.yaml",
                        help="the config as a flag, the same as the first argument CONFIG.yaml "
                             "(kept for old scripts)")
    parser.add_argument("--show-fields", action="store_true",
                        help="list every config field (leaf's, then TrainingArguments') and exit")
    parser.set_defaults(accepts_extra=True)


def format_fields() -> str:
    """Every config field with its type, default and help: leaf's own fields (and the training
    defaults leaf changes) first, then the rest of ``transformers.TrainingArguments``."""
    import dataclasses
    import textwrap

    from leaf.distill.config import DistillArguments  # heavy: transformers

    own = list(DistillArguments.__annotations__)  # in the order leaf declares them
    fields = [f for f in dataclasses.fields(DistillArguments) if f.init]
    mine = sorted((f for f in fields if f.name in own), key=lambda f: own.index(f.name))

    def entry(f) -> str:
        default = f.default if f.default is not dataclasses.MISSING else \
            (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        default = getattr(default, "value", default)  # enums
        kind = getattr(f.type, "__name__", None) or str(f.type).replace("typing.", "")
        text = " ".join(str(f.metadata.get("help", "")).split())
        body = textwrap.fill(text, 92, initial_indent="      ", subsequent_indent="      ")
        return f"  {f.name}  ({kind}, default {default!r})" + (f"\n{body}" if text else "")

    lines = ["leaf's fields (and the training defaults leaf sets; the paper's values):", ""]
    lines += [entry(f) for f in mine]
    lines += ["", "transformers.TrainingArguments fields (see its documentation):", ""]
    lines += [entry(f) for f in fields if f.name not in own]
    return "\n".join(lines)


def run(args) -> int:
    import yaml  # heavy: yaml

    if args.show_fields:
        print(format_fields())
        return 0
    extra = list(args.extra or [])
    positional = extra.pop(0) if extra and not extra[0].startswith("-") else None
    if positional and args.config_flag and positional != args.config_flag:
        raise LeafError(f"two configs given: {positional} and --config {args.config_flag}")
    config_path = positional or args.config_flag
    if not config_path:
        late = next((e for e in extra if e.endswith((".yaml", ".yml"))), None)
        raise LeafError("give the config first: leaf distill CONFIG.yaml [--field value ...]"
                        + (f" ({late} came after a field)" if late else ""))
    path = Path(config_path)
    if not path.is_file():
        raise LeafError(f"{path}: config file not found")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LeafError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise LeafError(f"{path}: expected a mapping of field: value")

    from leaf.stages import distill, distill_arguments  # heavy: numpy

    dargs = distill_arguments(config, extra)
    trainer = distill(dargs)
    if trainer.is_world_process_zero():
        print(f"saved the distilled student to {dargs.output_dir}")
    return 0
