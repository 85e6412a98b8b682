"""``leaf make-student``: a student directory made from a teacher (quantised, fewer layers)."""

from __future__ import annotations

import argparse

from leaf.commands._options import MODEL_HELP, add_option, build, flag, model_ref
from leaf.stages.options import StudentOptions

NAME = "make-student"
HELP = "make a student from a teacher: weights rounded to fewer bits and/or fewer decoder layers"
DESCRIPTION = """\
Reads  TEACHER: a model directory, hub id, .gguf file (or a directory holding one) or
       testbed:FAMILY/ROLE.
Writes --out DIR: config.json, model.safetensors, generation_config.json, the tokenizer and its
       chat template: the teacher's architecture and tokenizer (logit distillation needs the same
       vocabulary), a weaker model. DIR appears only when complete; every leaf command loads it.

--bits B rounds every weight matrix of the decoder layers (attention and MLP projections) to
signed B-bit integers with one absmax scale per --group inputs, stored dequantised: each weight
moves by at most half its group's step. --keep-every K keeps layers 0, K, 2K, ...;
--keep-first N / --keep-last N keep the ends. Give --bits, a layer selection, or both.

A useful student is right on some problems and wrong on others: screen it against the teacher
(leaf screen) before distilling. docs/REAL_MODEL.md measured 3-, 4- and 6-bit students of
SmolLM2-135M-Instruct. (Python: leaf.stages.make_student.)

  leaf make-student teacher --out student --bits 6
  leaf make-student teacher --out student --keep-every 2
"""

FIELDS = ("bits", "group", "keep_every", "keep_first", "keep_last", "dtype")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("teacher", type=model_ref, help=f"the teacher: {MODEL_HELP}, or .gguf")
    parser.add_argument("--out", required=True,
                        help="directory to write (must not exist, or be empty)")
    metavars = {"bits": "B", "group": "N", "keep_every": "K", "keep_first": "N",
                "keep_last": "N"}
    for name in FIELDS:
        add_option(parser, StudentOptions, name, **({"metavar": metavars[name]}
                                                    if name in metavars else {}))


def run(args: argparse.Namespace) -> int:
    from leaf.stages import make_student  # imports torch when it runs: after --help

    options = build(StudentOptions, {f: flag(f) for f in FIELDS},
                    **{f: getattr(args, f) for f in FIELDS})
    print(make_student(args.teacher, args.out, options))
    return 0
