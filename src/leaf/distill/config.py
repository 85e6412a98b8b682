"""``DistillArguments``: LeaF's distillation knobs beside ``transformers.TrainingArguments``.

Every ``TrainingArguments`` field is accepted unchanged; the training defaults below are the
paper's (AdamW, cosine schedule, max learning rate 1e-5, 5 warm-up steps, 3 epochs) and logging
goes nowhere unless ``report_to`` asks for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.trainer_utils import SchedulerType
from transformers.training_args import OptimizerNames

from leaf.distill.fused import WEIGHT_GRAD_DTYPES
from leaf.distill.losses import DIVERGENCES
from leaf.distill.mixing import DEFAULT_MIXING, MIXINGS
from leaf.settings import SettingError

KD_LOSS_PATHS = ("auto", "hidden", "logits")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class DistillArguments(TrainingArguments):
    """TrainingArguments plus the LeaF distillation settings (see docs/distillation.md)."""

    # --- models and data ---
    teacher_model: str | None = field(
        default=None, metadata=_help("Teacher model directory or hub id (frozen, never trained).")
    )
    student_model: str | None = field(
        default=None, metadata=_help("Student model directory or hub id (the model trained).")
    )
    train_file: str | None = field(
        default=None,
        metadata=_help("counterfactuals.jsonl from `leaf prune`: original and counterfactual rows."),
    )
    eval_file: str | None = field(
        default=None, metadata=_help("Optional held-out file in the same format, for eval loss.")
    )
    use_counterfactuals: bool = field(
        default=True,
        metadata=_help("Train on counterfactual rows; false gives plain KD ('KD w/o mask')."),
    )
    max_length: int = field(
        default=4096, metadata=_help("Longest sequence in tokens; longer rows are truncated.")
    )
    system_prompt: str | None = field(
        default=None, metadata=_help("Optional system message rendered before each instruction.")
    )
    # --- the loss ---
    mixing: str = field(
        default=DEFAULT_MIXING,
        metadata={"help": "How originals and counterfactuals share the optimizer batches: "
                          "paired (every batch holds its originals plus counterfactual_ratio times "
                          "as many counterfactuals, so L = lambda * L_kd + (1 - lambda) * L_cd in "
                          "every step, and an epoch is a pass over the originals) or uniform (all "
                          "rows shuffled together into one token-weighted mean, lambda unused, and "
                          "an epoch is a pass over all rows).",
                  "choices": list(MIXINGS)},
    )
    counterfactual_ratio: float = field(
        default=1.0,
        metadata=_help("paired mixing: counterfactual rows added to each optimizer batch per "
                       "original row in it (at least one; drawn again when there are too few)."),
    )
    hybrid_lambda: float = field(
        default=0.5,
        metadata=_help("lambda: weight of the standard-distillation term (1 - lambda: "
                       "counterfactual); paired mixing only."),
    )
    divergence: str = field(
        default="forward_kl",
        metadata={"help": "Token-level divergence: forward_kl (paper), reverse_kl or jsd.",
                  "choices": list(DIVERGENCES)},
    )
    jsd_beta: float = field(
        default=0.5, metadata=_help("beta of JSD: m = beta * p_T + (1 - beta) * p_S.")
    )
    temperature: float = field(
        default=1.0, metadata=_help("Softmax temperature t of both models; the loss is scaled by t^2.")
    )
    ce_weight: float = field(
        default=0.0, metadata=_help("Weight of an added cross-entropy on the gold response tokens.")
    )
    kd_chunk_size: int = field(
        default=256,
        metadata=_help("Positions per chunk when computing the divergence (see "
                       "docs/PERFORMANCE.md: 256 keeps the loss's extra memory near one "
                       "gradient-sized tensor and is faster than 1024 on CPU)."),
    )
    kd_weight_grad_dtype: str = field(
        default="weight",
        metadata={"help": "kd_loss_path hidden: the dtype in which the output weight's gradient "
                          "is summed over the loss's chunks: weight (the weight's own dtype: "
                          "float32 for a float32 or mixed-precision student; for a bfloat16 "
                          "weight half the memory of float32 and a 16-bit product, one rounding "
                          "per chunk) or float32 (a float32 sum, cast to the weight's dtype once; "
                          "the product then runs in float32). See docs/PERFORMANCE.md, Peers.",
                  "choices": list(WEIGHT_GRAD_DTYPES)},
    )
    kd_loss_path: str = field(
        default="auto",
        metadata={"help": "Where the loss starts: hidden (the models' final hidden states, each "
                          "chunk of positions through the output layers in turn; no "
                          "tokens x vocabulary tensor), logits (the models' full logits, then "
                          "the chunked divergence) or auto (hidden when the student allows it: "
                          "logits = output_layer(hidden), not under FSDP or DeepSpeed ZeRO-3).",
                  "choices": list(KD_LOSS_PATHS)},
    )
    # --- teacher ---
    teacher_cache: str | None = field(
        default=None,
        metadata=_help("Directory from `leaf teacher-cache`: top-k teacher logits used instead "
                       "of running the teacher."),
    )
    teacher_dtype: str = field(
        default="auto",
        metadata=_help("dtype of the teacher weights: auto, bfloat16, float16 or float32."),
    )
    teacher_device_map: str | None = field(
        default=None,
        metadata=_help("device_map for the teacher (e.g. 'auto' to shard it over the GPUs); "
                       "null puts it on the training device."),
    )
    # --- student ---
    student_dtype: str = field(
        default="float32",
        metadata=_help("dtype the student is loaded in (use bf16=true for mixed precision)."),
    )
    lora: dict | str | None = field(
        default=None,
        metadata=_help("peft LoRA settings, e.g. {r: 16, lora_alpha: 32, target_modules: "
                       "all-linear}; null trains every parameter."),
    )
    # --- paper training defaults (TrainingArguments fields) ---
    learning_rate: float = field(default=1e-5, metadata=_help("Peak learning rate (paper: 1e-5)."))
    lr_scheduler_type: SchedulerType | str = field(
        default="cosine", metadata=_help("Learning-rate schedule (paper: cosine).")
    )
    warmup_steps: float = field(
        default=0,
        metadata=_help("Linear warm-up steps (a value below 1 is a share of the total steps). "
                       "0 by default so a short run trains at learning_rate from its first "
                       "step (with 5 warm-up steps, max_steps: 2 trains at lr 0, then a "
                       "fraction of it); the paper's 5 suits long runs of many hundred steps."),
    )
    num_train_epochs: float = field(default=3.0, metadata=_help("Epochs (paper: 3)."))
    optim: OptimizerNames | str = field(default="adamw_torch", metadata=_help("Optimizer (paper: AdamW)."))
    report_to: None | str | list[str] = field(
        default="none",
        metadata=_help("Where to log: none (default), tensorboard, wandb, ... (only when asked)."),
    )
    remove_unused_columns: bool = field(
        default=False, metadata=_help("Kept false: the collator's extra columns drive the loss.")
    )
    prediction_loss_only: bool = field(
        default=True, metadata=_help("Evaluation reports the loss only (no logits gathered).")
    )

    def __post_init__(self) -> None:
        if isinstance(self.lora, str):
            text = self.lora.strip()
            self.lora = None if text.lower() in ("", "null", "none") else json.loads(text)
        if self.divergence not in DIVERGENCES:
            _refuse("divergence", f"divergence must be one of {DIVERGENCES}, got "
                                  f"{self.divergence!r}")
        if not 0.0 <= self.hybrid_lambda <= 1.0:
            _refuse("hybrid_lambda", f"hybrid_lambda must be in [0, 1], got {self.hybrid_lambda}")
        if self.mixing not in MIXINGS:
            _refuse("mixing", f"mixing must be one of {MIXINGS}, got {self.mixing!r}")
        if not self.counterfactual_ratio > 0:
            _refuse("counterfactual_ratio", f"counterfactual_ratio must be positive, got "
                                            f"{self.counterfactual_ratio} (use_counterfactuals: "
                                            "false trains without them)")
        if self.train_sampling_strategy != "random":
            _refuse("train_sampling_strategy", f"train_sampling_strategy "
                    f"{self.train_sampling_strategy!r} is not supported: leaf's mixing sampler "
                    "forms the batches (see mixing)")
        if self.kd_loss_path not in KD_LOSS_PATHS:
            _refuse("kd_loss_path", f"kd_loss_path must be one of {KD_LOSS_PATHS}, got "
                                    f"{self.kd_loss_path!r}")
        if self.kd_weight_grad_dtype not in WEIGHT_GRAD_DTYPES:
            _refuse("kd_weight_grad_dtype", f"kd_weight_grad_dtype must be one of "
                    f"{WEIGHT_GRAD_DTYPES}, got {self.kd_weight_grad_dtype!r}")
        if self.temperature <= 0:
            _refuse("temperature", f"temperature must be positive, got {self.temperature}")
        super().__post_init__()


class DistillSettingError(SettingError, ValueError):
    """A value ``DistillArguments`` refuses: a :class:`leaf.settings.SettingError` that knows
    its field (so each caller names it its own way), and a ``ValueError`` like the checks of
    ``TrainingArguments`` itself."""


def _refuse(field: str, problem: str) -> None:
    raise DistillSettingError.at("DistillArguments", field, problem)
