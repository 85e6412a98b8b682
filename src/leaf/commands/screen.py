"""leaf screen: teacher and student answer every sample; record who is right."""

from __future__ import annotations

import argparse

from leaf.commands._data import add_columns_argument, data_source
from leaf.commands._generation import add_generation_arguments, generation_options
from leaf.commands._options import MODEL_HELP, model_ref

NAME = "screen"
HELP = "let teacher and student answer every sample and grade both (stage 1, step 1)"
DESCRIPTION = """\
Reads samples (id, task, instruction, answer | tests + entry_point; JSONL or any format of
--columns) and writes screened.jsonl: every sample's fields plus teacher_response,
student_response (generated text, greedy unless --temperature) and teacher_correct,
student_correct (bool). An answer cut at --max-new-tokens is graded wrong and marked
teacher_truncated / student_truncated; the summary line counts them and warns when more than
2 percent were cut. `leaf detect` then scores the samples the student gets wrong and the
teacher right.

The teacher answers first and its answers are kept in OUT.teacher until the student is done,
so only one model is in memory at a time. Interrupted runs resume where they stopped.
(Python: leaf.stages.screen.)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, type=model_ref, metavar="MODEL",
                        help=f"teacher model: {MODEL_HELP}")
    parser.add_argument("--student", required=True, type=model_ref, metavar="MODEL",
                        help=f"student model: {MODEL_HELP}")
    parser.add_argument("--data", required=True, help="samples: JSONL or any format of --columns")
    parser.add_argument("--out", required=True, help="screened JSONL to write")
    add_columns_argument(parser)
    add_generation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from leaf.stages import screen  # heavy: numpy

    print(screen(args.teacher, args.student, data_source(args.data, args), args.out, generation_options(args)))
    return 0
