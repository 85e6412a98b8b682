"""leaf grade: score a predictions file against a benchmark file (no model needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from leaf.commands._data import add_columns_argument, data_source
from leaf.commands._options import add_option, build
from leaf.evaluate.metrics import samples_path, summary
from leaf.stages.options import GradingOptions

NAME = "grade"
HELP = "grade predictions (id, response) against a benchmark file"
DESCRIPTION = """\
Reads a bench (id, task, instruction, answer | tests + entry_point; JSONL or any format of
--columns) and a predictions JSONL (id and response, or id and a list `responses` for pass@k;
an answer marked `truncated`, as `leaf eval` writes it, is graded wrong), and writes metrics JSON
(task, n, and accuracy for math, pass@k for code, em/f1/subem for qa; a mixed bench gets one
block per task under by_task) plus per-sample results beside it in OUT_STEM.samples.jsonl.
Every bench id needs a prediction. Code runs in leaf's sandbox (leaf.evaluate.code).
(Python: leaf.stages.grade.)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bench", required=True,
                        help="benchmark: JSONL or any format of --columns")
    parser.add_argument("--predictions", required=True, help="predictions JSONL (id, response)")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    add_columns_argument(parser)
    add_grading_arguments(parser)


def add_grading_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("grading")
    for field in ("k", "workers", "code_timeout"):
        add_option(g, GradingOptions, field)


def grading_options(args: argparse.Namespace) -> GradingOptions:
    """The :class:`GradingOptions` the grading flags describe."""
    return build(GradingOptions, k=list(args.k), workers=args.workers,
                 code_timeout=args.code_timeout)


def run(args: argparse.Namespace) -> int:
    from leaf.stages import grade  # heavy: numpy

    out = Path(args.out)
    metrics = grade(data_source(args.bench, args), args.predictions, out, grading_options(args))
    print(f"{summary(metrics)}; wrote {out} and {samples_path(out)}")
    return 0
