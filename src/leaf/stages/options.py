"""The typed options of every stage function (:mod:`leaf.stages`).

Each is a dataclass whose values are checked when it is made (:class:`leaf.settings.Checked`):
a bad value raises :class:`leaf.settings.SettingError` naming the field, before any model is
loaded. They are the one place where a setting's type, range, default and help are declared:
the command line (``leaf <stage>``) makes its flags from them and the run config (``leaf run``)
its sections, and both build these same objects, so a stage runs with exactly what its caller
wrote down. Where ``leaf run`` deliberately uses another default than the command, the field
declares it (``setting(run=...)``); ``max_new_tokens`` has one default,
:data:`DEFAULT_MAX_NEW_TOKENS`, for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from leaf.detect.counterfactuals import PruneOptions
from leaf.evaluate.generation import GenerationSettings
from leaf.evaluate.truncation import WARN_SHARE
from leaf.settings import Checked, SettingError, setting

__all__ = [
    "DetectOptions", "EvalOptions", "GenerationOptions", "GradingOptions", "PruneOptions",
    "StudentOptions", "TeacherCacheOptions", "VerifyOptions",
]

GenerationDtype = Literal["float32", "bfloat16", "float16", "auto"]
CUDA_DETECT_BATCH_SIZE = 4
DEVICE_HELP = "auto (GPUs when visible, several shared with device_map=auto), cpu, cuda or cuda:N"


def check_device(value: str, owner: str, path: str = "device") -> None:
    """Refuse a device other than auto, cpu, cuda or cuda:N (the same values everywhere)."""
    if not (value in ("auto", "cpu", "cuda") or (value.startswith("cuda:")
                                                 and value[5:].isdigit())):
        raise SettingError.at(owner, path, f"auto, cpu, cuda or cuda:N, got {value!r}")


#: the answer budget of every command and run config (``GenerationOptions.max_new_tokens``)
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_SKIP_LAST = 0  # measured on SmolLM2-135M-Instruct: docs/REAL_MODEL.md


@dataclass
class GenerationOptions(Checked):
    """How a model answers prompts (screening, verification, evaluation)."""

    # leaf run answers in bigger batches (the testbed's answers are one line)
    batch_size: int = setting(8, ge=1, run=64, help="prompts per generate call")
    # one default everywhere: a run config that sets nothing must not cut a real model's
    # answers (the bundled testbed configs set their own, 24 or 48)
    max_new_tokens: int = setting(
        DEFAULT_MAX_NEW_TOKENS, ge=1,
        help="longest answer in tokens: an answer still unfinished here is cut, counted and "
             f"graded wrong, with a warning when more than {100 * WARN_SHARE:g} percent are "
             "(reasoning models need thousands)")
    dtype: GenerationDtype = setting("float32", help="weights' dtype (auto: the checkpoint's)")
    device: str = setting("auto", help=DEVICE_HELP)
    backend: Literal["hf", "vllm"] = setting(
        "hf", help="hf (transformers generate) or vllm (an optional extra)")
    temperature: float = setting(0.0, ge=0.0, help="0 = greedy")
    top_p: float = setting(1.0, gt=0.0, le=1.0, help="nucleus sampling when sampling")
    seed: int = setting(0, help="sampling seed")

    def check(self) -> None:
        check_device(self.device, "GenerationOptions")

    def settings(self, progress: bool = False):
        """The decoding knobs the generation backends take."""

        return GenerationSettings(max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                  temperature=self.temperature, top_p=self.top_p, seed=self.seed,
                                  progress=progress)

    def chunk_size(self) -> int:
        """Prompts answered between two resume points: one batch with hf; vLLM schedules its
        own batches and is only fast when it sees many prompts at once."""
        return self.batch_size if self.backend == "hf" else max(self.batch_size, 256)


@dataclass
class DetectOptions(Checked):
    """What :func:`leaf.stages.detect` scores and how."""

    level: Literal["instruction", "response", "both"] = setting(
        "instruction", help="score the instruction, the response prefixes, or both")
    segments: int = setting(2, ge=2, help="response segments K (paper: 2 or 3)")
    # leaf run scores the testbed's short rows 16 at a time, on any device
    batch_size: int | None = setting(
        None, ge=1, run=16,
        help="sequences per forward/backward pass (unset: 1 on CPU, where batching only adds "
             f"padding, measured in docs/PERFORMANCE.md; {CUDA_DETECT_BATCH_SIZE} on a GPU)")
    dtype: GenerationDtype = setting(
        "float32", help="weights' dtype (auto: the checkpoint's; gradients are normed in float32)")
    device: str = setting("auto", help=DEVICE_HELP)
    score_all: bool = setting(False, help="score every sample, not only teacher-right/"
                                          "student-wrong ones of a screened file")
    skip_last: int = setting(DEFAULT_SKIP_LAST, ge=0,
                             help="tokens at the end of each instruction that are never "
                                  "scored: the position effect before the end of turn "
                                  "(docs/REAL_MODEL.md)")
    max_length: int | None = setting(
        None, ge=1, help="longest instruction + response in tokens; longer samples are refused "
                         "before any model loads (default: the models' context length)")

    def check(self) -> None:
        check_device(self.device, "DetectOptions")

    def resolved_batch_size(self) -> int:
        """``batch_size``, or 1 on CPU and CUDA_DETECT_BATCH_SIZE on a GPU."""
        if self.batch_size is not None:
            return self.batch_size
        if self.device == "cpu":
            return 1
        import torch  # heavy: torch

        on_gpu = self.device.startswith("cuda") or torch.cuda.is_available()
        return CUDA_DETECT_BATCH_SIZE if on_gpu else 1


@dataclass
class VerifyOptions(Checked):
    """The answer check of :func:`leaf.stages.prune`: both models must answer a counterfactual
    correctly for it to be kept."""

    teacher: str = setting(help="teacher model directory or hub id")
    student: str = setting(help="student model directory or hub id")
    generation: GenerationOptions = setting(default_factory=GenerationOptions,
                                            help="how both models answer")
    chunk: int = setting(1000, ge=0, help="samples verified per model load; the output is "
                                          "saved after each chunk (0 = all at once)")
    skip_signal: bool = setting(False, help="skip the measure of the kept counterfactuals' "
                                            "KL(teacher || student) against their originals' "
                                            "(one forward of each model per row)")


@dataclass
class TeacherCacheOptions(Checked):
    """How :func:`leaf.stages.teacher_cache` runs the teacher (match the distill config)."""

    top_k: int = setting(64, ge=1, help="logits kept per target token")
    student: str | None = setting(None, help="student model: its tokenizer renders the rows "
                                             "(default: the teacher's)")
    max_length: int = setting(4096, ge=1, help="longest sequence in tokens")
    system_prompt: str | None = setting(None, help="system message, as in the distill config")
    batch_size: int = setting(4, ge=1, help="rows per teacher forward pass")
    dtype: GenerationDtype = setting(
        "float32", help="teacher weights' dtype (auto: the checkpoint's, e.g. bfloat16)")
    device: str = setting("auto", help=DEVICE_HELP)
    device_map: str | None = setting(
        None, help="a transformers device_map, overriding device (rarely needed: device auto "
                   "already spreads the teacher over several GPUs)")

    def check(self) -> None:
        check_device(self.device, "TeacherCacheOptions")


@dataclass
class GradingOptions(Checked):
    """How answers are graded (:func:`leaf.stages.grade`)."""

    k: list[int] = setting(default_factory=lambda: [1], ge=1,
                           help="pass@k values for code (k <= answers per problem)")
    workers: int = setting(4, ge=1, help="code test runs in parallel")
    code_timeout: float = setting(10.0, gt=0.0, help="seconds a program may run on its tests")


@dataclass
class EvalOptions(Checked):
    """How :func:`leaf.stages.evaluate` answers a benchmark and grades it."""

    generation: GenerationOptions = setting(default_factory=GenerationOptions,
                                            help="how the model answers")
    grading: GradingOptions = setting(default_factory=GradingOptions, help="how it is graded")
    num_samples: int = setting(1, ge=1, help="answers per problem (pass@k; needs "
                                             "generation.temperature > 0)")

    def check(self) -> None:
        if self.num_samples > 1 and self.generation.temperature <= 0:
            raise SettingError.at("EvalOptions", "num_samples",
                                  "> 1 needs {} > 0 (greedy answers repeat)",
                                  mentions=("generation.temperature",))


@dataclass
class StudentOptions(Checked):
    """How :func:`leaf.stages.make_student` makes a student from a teacher: quantised weights,
    fewer decoder layers, or both (at least one)."""

    bits: int | None = setting(None, ge=2, le=16, help=(
        "round every weight matrix of the decoder layers to signed integers of this many bits "
        "(one absmax scale per group of inputs, round to nearest), stored dequantised; "
        "embeddings, norms and the output layer are kept (none: weights unchanged)"))
    group: int = setting(32, ge=0, help="consecutive inputs sharing one scale when quantising (0: one "
                                        "scale per row); must divide every matrix's inputs")
    keep_every: int | None = setting(None, ge=1, help=(
        "keep every k-th decoder layer: layers 0, k, 2k, ... (none: every layer, or the ends "
        "chosen by the first/last N)"))
    keep_first: int | None = setting(None, ge=0, help=(
        "keep the first N decoder layers (with the last N: both ends)"))
    keep_last: int | None = setting(None, ge=0, help=(
        "keep the last N decoder layers (with the first N: both ends)"))
    dtype: Literal["float32", "bfloat16", "float16"] = setting(
        "float32", help="dtype of the written weights (the work is done in float32)")

    def check(self) -> None:
        ends = self.keep_first is not None or self.keep_last is not None
        if self.keep_every is not None and ends:
            raise SettingError.at("StudentOptions", "keep_every",
                                  "cannot go with {} or {}: choose one way to drop layers",
                                  mentions=("keep_first", "keep_last"))
        if self.bits is None and self.keep_every is None and not ends:
            raise SettingError.at("StudentOptions", "bits",
                                  "none, and no layer is dropped ({}, {}, {}): the student "
                                  "would be the teacher", mentions=("keep_every", "keep_first",
                                                                    "keep_last"))
