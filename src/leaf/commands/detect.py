"""``leaf detect``: teacher and student input-gradient saliency -> scores.jsonl."""

from __future__ import annotations

import argparse

from leaf.commands._data import add_columns_argument, data_source
from leaf.commands._options import (
    MODEL_HELP,
    add_device,
    add_dtype,
    add_option,
    build,
    model_ref,
)
from leaf.stages.options import DetectOptions

D = DetectOptions  # every flag below is one of its fields

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
                   help="samples (or screened.jsonl): JSONL or any format of --columns")
    p.add_argument("--out", required=True, metavar="FILE", help="scores JSONL to write")
    add_option(p, D, "level")
    add_option(p, D, "segments", metavar="K")
    add_option(p, D, "batch_size", metavar="N")
    add_dtype(p, D)
    add_device(p, D)
    add_option(p, D, "score_all", "--all")
    add_columns_argument(p)
    add_option(p, D, "max_length", metavar="N")
    add_option(p, D, "skip_last", metavar="N")


def run(args: argparse.Namespace) -> int:
    from leaf.stages import detect  # heavy: numpy

    options = build(DetectOptions, {"score_all": "--all"}, level=args.level,
                    segments=args.segments, batch_size=args.batch_size, dtype=args.dtype,
                    device=args.device, score_all=args.all, max_length=args.max_length,
                    skip_last=args.skip_last)
    print(detect(args.teacher, args.student, data_source(args.data, args), args.out, options))
    return 0
