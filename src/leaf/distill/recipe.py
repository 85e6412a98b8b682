"""The distillation recipe: load models and data from ``DistillArguments``, train, save.

Features: online teacher (frozen, own dtype and device_map) or an offline top-k cache;
vocabulary check between teacher and student; full-parameter or LoRA (peft) training;
gradient checkpointing, mixed precision and multi-GPU through the stock ``Trainer`` and
``accelerate launch``; automatic resume from the last checkpoint in ``output_dir``; the final
model and tokenizer saved in Hugging Face format (safetensors) at ``output_dir`` with a model
card (``README.md``, :mod:`leaf.distill.card`).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from pathlib import Path

import torch
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import get_last_checkpoint

from leaf.distill.card import card_for, use_leaf_card
from leaf.distill.config import DistillArguments
from leaf.distill.data import DistillCollator, DistillDataset
from leaf.distill.progress import plain_logs
from leaf.distill.trainer import DistillTrainer
from leaf.distill.vocab import check_shared_vocab
from leaf.errors import LeafError
from leaf.models import load_causal_lm, load_tokenizer, torch_dtype

logger = logging.getLogger(__name__)


def load_student(args: DistillArguments):
    """The student model (LoRA-wrapped when ``args.lora``) and its tokenizer."""
    tokenizer = load_tokenizer(args.student_model, "student", padding_side="right")
    model = load_causal_lm(args.student_model, "student", dtype=torch_dtype(args.student_dtype))
    if args.lora:
        from peft import LoraConfig, get_peft_model  # heavy: peft

        settings = {"task_type": "CAUSAL_LM", **args.lora}
        with warnings.catch_warnings():  # peft reads transformers' deprecated alias
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                    category=FutureWarning)
            model = get_peft_model(model, LoraConfig(**settings))
    return model, tokenizer


def load_teacher(
    path: str, student_tokenizer, student_vocab: int, dtype: str = "auto",
    device_map: str | None = None, device=None,
):
    """The frozen teacher on ``device`` (or spread by ``device_map``), vocabulary checked."""
    teacher_tokenizer = load_tokenizer(path, "teacher", padding_side=None)
    kwargs = {"dtype": torch_dtype(dtype)}
    if device_map:
        kwargs["device_map"] = device_map
    teacher = load_causal_lm(path, "teacher", **kwargs)
    check_shared_vocab(student_tokenizer, teacher_tokenizer, student_vocab,
                       teacher.get_output_embeddings().weight.shape[0])
    if not device_map and device is not None:
        teacher.to(device)
    teacher.eval().requires_grad_(False)
    return teacher


def build_trainer(args: DistillArguments) -> DistillTrainer:
    """Load everything ``args`` names and return a ready :class:`DistillTrainer`."""
    for name in ("student_model", "train_file"):
        if not getattr(args, name):
            raise LeafError(f"the config must set {name}")
    if not args.teacher_model and not args.teacher_cache:
        raise LeafError("the config must set teacher_model (online) or teacher_cache (offline)")
    model, tokenizer = load_student(args)
    student_vocab = model.get_output_embeddings().weight.shape[0]

    def dataset(path: str) -> DistillDataset:
        return DistillDataset(path, tokenizer, args.max_length, args.system_prompt,
                              include_counterfactuals=args.use_counterfactuals)

    train = dataset(args.train_file)
    evaluation = dataset(args.eval_file) if args.eval_file else None
    logger.info("training rows: %s; mixing: %s", dict(train.stats), args.mixing)
    if not train.stats["counterfactual"] and args.mixing == "paired" and args.hybrid_lambda != 1.0:
        logger.warning("no counterfactual rows: plain KD, L = L_kd (hybrid_lambda=%s unused)",
                       args.hybrid_lambda)
    teacher = cache = None
    if args.teacher_cache:
        from leaf.distill.cache import TeacherCache  # heavy: torch

        cache = TeacherCache(args.teacher_cache)
        cache.check_compatible(args.divergence, student_vocab)
        for d in (train, evaluation):
            if d is not None:
                cache.attach(d)
    else:
        teacher = load_teacher(args.teacher_model, tokenizer, student_vocab, args.teacher_dtype,
                               args.teacher_device_map, args.device)
    trainer = DistillTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation,
        data_collator=DistillCollator(tokenizer.pad_token_id), processing_class=tokenizer,
        teacher=teacher, teacher_cache=cache,
    )
    plain_logs(trainer)
    use_leaf_card(trainer)
    warn_long_warmup(trainer)
    return trainer


def warmup_share(warmup_steps: float, total_steps: int) -> float:
    """The share of ``total_steps`` that linear warm-up takes (``warmup_steps`` below 1 is
    itself a share, as ``transformers`` reads it)."""
    if total_steps <= 0:
        return 0.0
    steps = int(warmup_steps) if warmup_steps >= 1 else math.ceil(total_steps * warmup_steps)
    return min(steps, total_steps) / total_steps


def warn_long_warmup(trainer: DistillTrainer) -> bool:
    """Warn (and return True) when warm-up takes at least half of the optimizer steps: those
    steps train below ``learning_rate``, a short run barely at all."""
    args = trainer.args
    total = args.max_steps
    if total <= 0:
        per_epoch = math.ceil(len(trainer.get_train_dataloader())
                              / max(1, args.gradient_accumulation_steps))
        total = math.ceil(per_epoch * args.num_train_epochs)
    share = warmup_share(args.warmup_steps, total)
    if share < 0.5:
        return False
    logger.warning("warmup_steps %s takes %.0f%% of the %d optimizer steps: the learning rate "
                   "reaches %s only at step %d; lower warmup_steps (0 trains at the full rate "
                   "from step 1) or train longer", f"{args.warmup_steps:g}", 100 * share, total,
                   f"{args.learning_rate:g}", round(share * total))
    return True


def _complete(checkpoint: Path) -> bool:
    """Whether a checkpoint was saved to the end: the trainer writes ``trainer_state.json``
    last, so a process killed while saving leaves a folder without it (or with a cut one)."""
    import json

    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def resume_point(args: DistillArguments) -> str | bool | None:
    """``resume_from_checkpoint`` if given, else the last complete ``checkpoint-*`` in
    ``output_dir`` (one cut short by a kill while saving is passed over)."""
    if args.resume_from_checkpoint:
        return args.resume_from_checkpoint
    if not (args.output_dir and Path(args.output_dir).is_dir()):
        return None
    last = get_last_checkpoint(args.output_dir)
    if last is None or _complete(Path(last)):
        return last
    steps = sorted(((int(m.group(1)), p) for p in Path(args.output_dir).iterdir()
                    if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))),
                   reverse=True)
    good = next((p for _, p in steps if _complete(p)), None)
    logger.warning("%s was cut short while saving; resuming from %s", last, good or "the start")
    return str(good) if good else None


def _last_step_state(checkpoint: str | bool | None, max_steps: int):
    """The checkpoint's ``TrainerState`` when it holds this run's last step (``max_steps``;
    a run killed after saving it, before the final model was written), else None."""
    from transformers import TrainerState  # heavy: transformers

    if not isinstance(checkpoint, str) or max_steps <= 0:
        return None
    state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    return state if state.global_step >= max_steps else None


def train(args: DistillArguments) -> DistillTrainer:
    """Train, then save the final model, tokenizer and ``trainer_state.json`` at ``output_dir``."""
    trainer = build_trainer(args)
    checkpoint = resume_point(args)
    finished = _last_step_state(checkpoint, args.max_steps)
    if finished is not None:
        # nothing left to train (the trainer would run one step past the end): the last
        # checkpoint is the final model
        logger.info("%s holds the last step; saving it as the final model", checkpoint)
        trainer._load_from_checkpoint(checkpoint)
        trainer.state = finished
        trainer.state.log_history.append({"epoch": finished.epoch, "step": finished.global_step,
                                          "total_flos": finished.total_flos})
    else:
        if checkpoint:
            logger.info("resuming from %s", checkpoint)
        trainer.train(resume_from_checkpoint=checkpoint)
    model = trainer.model
    if args.lora and trainer.is_world_process_zero():  # save the adapter, then the merged model
        trainer.save_model(str(Path(args.output_dir) / "lora_adapter"))
    if args.lora:
        model = trainer.accelerator.unwrap_model(model).merge_and_unload()
        if trainer.is_world_process_zero():
            model.save_pretrained(args.output_dir)
            trainer.processing_class.save_pretrained(args.output_dir)
            torch.save(trainer.args, Path(args.output_dir) / TRAINING_ARGS_NAME)  # as a full run
    else:
        trainer.save_model(args.output_dir)
    trainer.save_state()
    if trainer.is_world_process_zero():
        card_for(trainer)  # README.md: teacher, student, data, lambda, counts, leaf version
    return trainer
