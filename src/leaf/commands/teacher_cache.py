"""``leaf teacher-cache``: run the teacher once and keep its top-k logits for distillation."""

from __future__ import annotations

import json

from leaf.commands._options import (
    MODEL_HELP,
    add_device,
    add_dtype,
    add_option,
    build,
    model_ref,
)
from leaf.stages.options import TeacherCacheOptions

D = TeacherCacheOptions  # every flag below but --teacher, --data and --out is one of its fields

NAME = "teacher-cache"
HELP = "precompute the teacher's top-k logits on the training rows for `leaf distill`"
DESCRIPTION = """\
Reads  --data counterfactuals.jsonl (the file `leaf distill` trains on) and the teacher.
Writes --out DIR: meta.json, index.jsonl (one entry per row) and shard-*.safetensors holding,
       for every target token, the teacher's K largest logits and their ids.

Rows are rendered with the student's tokenizer and chat template (--student; default the
teacher's) and the same --max-length / --system-prompt as the training config, so that the
cache matches what `leaf distill` feeds the student; training checks this row by row.
Point the distillation config at it with `teacher_cache: DIR`. The teacher distribution is then
approximated by the softmax over its top K logits (renormalised top-k). Rerunning the same
command resumes an interrupted cache. (Python: leaf.stages.teacher_cache.)"""


def add_arguments(parser) -> None:
    parser.add_argument("--teacher", required=True, type=model_ref, metavar="MODEL",
                        help=f"teacher model: {MODEL_HELP}")
    parser.add_argument("--data", required=True, help="counterfactuals.jsonl to cache")
    parser.add_argument("--out", required=True, help="output directory of the cache")
    add_option(parser, D, "top_k")
    add_option(parser, D, "student", type=model_ref, metavar="MODEL")
    add_option(parser, D, "max_length")
    add_option(parser, D, "system_prompt")
    add_option(parser, D, "batch_size")
    add_dtype(parser, D)
    add_device(parser, D)
    add_option(parser, D, "device_map", metavar="MAP")


def run(args) -> int:
    from leaf.stages import teacher_cache  # heavy: numpy

    options = build(TeacherCacheOptions, top_k=args.top_k, student=args.student,
                    max_length=args.max_length, system_prompt=args.system_prompt,
                    batch_size=args.batch_size, dtype=args.dtype, device_map=args.device_map,
                    device=args.device)
    out = teacher_cache(args.teacher, args.data, args.out, options)
    rows = json.loads((out / "meta.json").read_text(encoding="utf-8"))["rows"]
    print(f"cached the teacher's top-{options.top_k} logits for {rows} rows in {out}")
    return 0
