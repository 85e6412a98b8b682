"""``leaf detect``: teacher and student input-gradient saliency -> scores.jsonl."""

from __future__ import annotations

import argparse

from leaf.commands._options import build
from leaf.stages.options import CUDA_DETECT_BATCH_SIZE, DetectOptions

D = DetectOptions  # the defaults of the flags are the options' own

NAME = "detect"
HELP = "score every instruction (and response-prefix) token: teacher vs student saliency"
DESCRIPTION = """\
Compute, for each sample, the input-gradient saliency g_i = ||dL/de(x_i)||_2 of the teacher and
of the student (L: mean cross-entropy of the gold response, teacher forcing), min-max normalise
each, and write their normalised difference per unit (token, or word when the two tokenizers
split the text differently). Low `diff` marks tokens the student leans on and the teacher ignores.

Reads  --data samples.jsonl (id, task, instruction, response; screened files from `leaf screen`
       are filtered to teacher-right/student-wrong rows unless --all).
Writes --out scores.jsonl, one row per sample and scored text: id, level, segment, field,
       prefix_end, unit_kind, units ([start, end) character spans), teacher, student, diff,
       teacher_raw, student_raw, student_nll, skip_last. Levels: `instruction` scores the instruction
       (segment 0); `response` splits the gold response into --segments parts and scores the
       prefix before each boundary k (segment k, loss on the rest); `both` does both.
       --skip-last N leaves the instruction's last N tokens unscored (see docs/REAL_MODEL.md).
Resume: the output is written to OUT.part and renamed when done; run the same command again after
an interruption and finished samples are skipped. (Python: leaf.stages.detect.)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, metavar="DIR",
                   help="teacher model directory (or hub id)")
    p.add_argument("--student", required=True, metavar="DIR",
                   help="student model directory (or hub id)")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="samples JSONL (or screened.jsonl)")
    p.add_argument("--out", required=True, metavar="FILE", help="scores JSONL to write")
    p.add_argument("--level", choices=("instruction", "response", "both"), default=D.level,
                   help=f"what to score (default: {D.level})")
    p.add_argument("--segments", type=int, default=D.segments, metavar="K",
                   help=f"response segments K for --level response/both (default {D.segments}; "
                        "paper: 2, 3)")
    p.add_argument("--batch-size", type=int, default=D.batch_size, metavar="N",
                   help="sequences per forward/backward pass (default: 1 on CPU, where batching "
                        "only adds padding and memory, measured in docs/PERFORMANCE.md; "
                        f"{CUDA_DETECT_BATCH_SIZE} on a GPU)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=D.dtype,
                   help=f"weights' dtype (default {D.dtype}; gradients are normed in float32)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=D.device,
                   help="auto: GPUs when visible (device_map=auto), else CPU")
    p.add_argument("--all", action="store_true",
                   help="score every sample, not only teacher-right/student-wrong ones")
    p.add_argument("--skip-last", type=int, default=D.skip_last, metavar="N",
                   help="never score the last N tokens of each instruction, where a chat "
                        "model's gradient peaks whatever they say (default "
                        f"{D.skip_last}; docs/REAL_MODEL.md)")


def run(args: argparse.Namespace) -> int:
    from leaf.stages import detect

    options = build(DetectOptions, {"score_all": "--all"}, level=args.level,
                    segments=args.segments, batch_size=args.batch_size, dtype=args.dtype,
                    device=args.device, score_all=args.all, skip_last=args.skip_last)
    print(detect(args.teacher, args.student, args.data, args.out, options))
    return 0
