"""leaf eval: generate answers to a benchmark with one model, then grade them."""

from __future__ import annotations

import argparse
from pathlib import Path

from leaf.commands._data import add_columns_argument, data_source
from leaf.commands._generation import add_generation_arguments, generation_options
from leaf.commands._options import MODEL_HELP, add_option, build, model_ref
from leaf.commands.grade import add_grading_arguments, grading_options
from leaf.evaluate.metrics import samples_path, summary
from leaf.stages.options import EvalOptions

NAME = "eval"
HELP = "answer a benchmark with a model and grade the answers"
DESCRIPTION = """\
Reads a bench (JSONL or any format of --columns; see docs/evaluation.md; `leaf convert` makes
one from the public datasets) and writes into OUT_DIR: predictions.jsonl (id, response; or id,
responses with --num-samples > 1; truncated on an answer cut at --max-new-tokens),
metrics.json and metrics.samples.jsonl (as `leaf grade`). A cut answer is graded wrong and
counted (metrics.json's truncated), with a warning when more than 2 percent were cut.
Generation is resumable: rerunning the command keeps the predictions already written.
(Python: leaf.stages.evaluate.)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=model_ref, metavar="MODEL",
                        help=f"the model: {MODEL_HELP}")
    parser.add_argument("--bench", required=True,
                        help="benchmark: JSONL or any format of --columns")
    parser.add_argument("--out", required=True, help="output directory")
    add_option(parser, EvalOptions, "num_samples")
    add_columns_argument(parser)
    add_generation_arguments(parser)
    add_grading_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from leaf.stages import evaluate  # heavy: numpy

    options = build(EvalOptions, {"generation.temperature": "--temperature"},
                    generation=generation_options(args), grading=grading_options(args),
                    num_samples=args.num_samples)
    out_dir = Path(args.out)
    metrics = evaluate(args.model, data_source(args.bench, args), out_dir, options)
    metrics_path = out_dir / "metrics.json"
    print(f"{summary(metrics)}; wrote {out_dir / 'predictions.jsonl'}, {metrics_path} and "
          f"{samples_path(metrics_path)}")
    return 0
