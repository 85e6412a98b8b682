"""``leaf detect``: teacher and student input-gradient saliency -> scores.jsonl."""

from __future__ import annotations

import argparse

from leaf.commands._data import add_columns_argument, data_source
from leaf.commands._options import MODEL_HELP, add_device, add_dtype, build, model_ref
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
an interruption and finished samples are skipped. Each row records `text_hash` (the sample's
instruction and response) and `input_hash` (that text and the settings): a rerun scores again
the samples whose text or settings changed and says how many. (Python: leaf.stages.detect.)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, metavar="MODEL", type=model_ref,
                   help=f"teacher model: {MODEL_HELP}")
    p.add_argument("--student", required=True, metavar="MODEL", type=model_ref,
                   help=f"student model: {MODEL_HELP}")
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
    add_dtype(p, D.dtype, "weights' dtype (gradients are normed in float32)")
    add_device(p, D.device)
    p.add_argument("--all", action="store_true",
                   help="score every sample, not only teacher-right/student-wrong ones")
    add_columns_argument(p)
    p.add_argument("--max-length", type=int, default=D.max_length, metavar="N",
                   help="longest instruction + response in tokens; longer samples are refused, "
                        "each named, before any model loads (default: the models' context "
                        "length)")
    p.add_argument("--skip-last", type=int, default=D.skip_last, metavar="N",
                   help="never score the last N tokens of each instruction, where a chat "
                        "model's gradient peaks whatever they say (default "
                        f"{D.skip_last}; docs/REAL_MODEL.md)")


def run(args: argparse.Namespace) -> int:
    from leaf.stages import detect

    options = build(DetectOptions, {"score_all": "--all"}, level=args.level,
                    segments=args.segments, batch_size=args.batch_size, dtype=args.dtype,
                    device=args.device, score_all=args.all, max_length=args.max_length,
                    skip_last=args.skip_last)
    print(detect(args.teacher, args.student, data_source(args.data, args), args.out, options))
    return 0
