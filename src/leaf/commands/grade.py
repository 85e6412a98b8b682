"""leaf grade: score a predictions file against a benchmark file (no model needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "grade"
HELP = "grade predictions (id, response) against a benchmark file"
DESCRIPTION = """\
Reads a bench JSONL (id, task, instruction, answer | tests + entry_point) and a predictions
JSONL (id and response, or id and a list `responses` for pass@k), and writes metrics JSON
(task, n, and accuracy for math, pass@k for code, em/f1/subem for qa; a mixed bench gets one
block per task under by_task) plus per-sample results beside it in OUT_STEM.samples.jsonl.
Every bench id needs a prediction. Code runs in leaf's sandbox (leaf.evaluate.code).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bench", required=True, help="benchmark JSONL")
    parser.add_argument("--predictions", required=True, help="predictions JSONL (id, response)")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    add_grading_arguments(parser)


def add_grading_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("grading")
    g.add_argument("--k", type=int, nargs="+", default=[1],
                   help="pass@k values for code (k <= responses per problem), default 1")
    g.add_argument("--workers", type=int, default=4, help="code test runs in parallel (4)")
    g.add_argument("--code-timeout", type=float, default=10.0,
                   help="seconds a program may run against its tests (10)")


def samples_path(metrics_path: Path) -> Path:
    """``metrics.json`` -> ``metrics.samples.jsonl`` beside it."""
    return metrics_path.with_name(metrics_path.stem + ".samples.jsonl")


def grade_to_files(bench: list[dict], predictions: dict[str, list[str]], out: Path,
                   args: argparse.Namespace) -> dict:
    from leaf.data.jsonl import write_json_atomic, write_jsonl_atomic
    from leaf.evaluate.metrics import aggregate, grade_all

    rows = grade_all(bench, predictions, workers=args.workers, code_timeout=args.code_timeout)
    metrics = aggregate(rows, ks=args.k)
    write_jsonl_atomic(samples_path(out), rows)
    write_json_atomic(out, metrics)
    return metrics


def summary(metrics: dict) -> str:
    keys = [k for k, v in metrics.items() if isinstance(v, float)]
    parts = [f"{k} {metrics[k]:.4f}" for k in keys]
    for task, block in metrics.get("by_task", {}).items():
        parts.append(f"[{task}] " + summary(block))
    return f"n {metrics['n']}: " + ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    from leaf.data.schema import read_samples
    from leaf.evaluate.metrics import match_predictions, read_predictions

    bench = read_samples(args.bench, need_response=False, need_grading=True)
    predictions = read_predictions(args.predictions)
    match_predictions(bench, predictions, args.predictions)
    out = Path(args.out)
    metrics = grade_to_files(bench, predictions, out, args)
    print(f"{summary(metrics)}; wrote {out} and {samples_path(out)}")
    return 0
