"""leaf eval: generate answers to a benchmark with one model, then grade them."""

from __future__ import annotations

import argparse
from pathlib import Path

from leaf.commands._generation import add_generation_arguments, chunk_size, settings_from
from leaf.commands.grade import add_grading_arguments

NAME = "eval"
HELP = "answer a benchmark with a model and grade the answers"
DESCRIPTION = """\
Reads a bench JSONL (see docs/evaluation.md; `leaf convert` makes one from the public
datasets) and writes into OUT_DIR: predictions.jsonl (id, response; or id, responses with
--num-samples > 1), metrics.json and metrics.samples.jsonl (as `leaf grade`).
Generation is resumable: rerunning the command keeps the predictions already written.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--bench", required=True, help="benchmark JSONL")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-samples", type=int, default=1,
                        help="answers per problem (pass@k; needs --temperature > 0)")
    add_generation_arguments(parser)
    add_grading_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from leaf.commands.grade import grade_to_files, samples_path, summary
    from leaf.data.jsonl import ResumableWriter
    from leaf.data.schema import read_samples
    from leaf.errors import LeafError
    from leaf.evaluate.generation import make_generator, release

    bench = read_samples(args.bench, need_response=False, need_grading=True)
    settings = settings_from(args)
    n = args.num_samples
    if n < 1:
        raise LeafError("--num-samples must be at least 1")
    if n > 1 and settings.temperature <= 0:
        raise LeafError("--num-samples > 1 needs --temperature > 0 (greedy answers repeat)")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    with ResumableWriter(out_dir / "predictions.jsonl", key=lambda r: r["id"]) as writer:
        todo = [s for s in bench if s["id"] not in writer.done]
        if todo:
            generator = make_generator(args.model, backend=args.backend, dtype=args.dtype,
                                       device=args.device, settings=settings)
            with tqdm(total=len(todo), desc="eval (generate)", unit="problem") as bar:
                for lo in range(0, len(todo), chunk_size(args)):
                    chunk = todo[lo:lo + chunk_size(args)]
                    answers = generator.generate_n([s["instruction"] for s in chunk], n=n)
                    writer.write([{"id": s["id"], "response": a[0]} if n == 1 else
                                  {"id": s["id"], "responses": a}
                                  for s, a in zip(chunk, answers, strict=True)])
                    bar.update(len(chunk))
            release(generator)
        predictions = {r["id"]: r.get("responses") or [r["response"]] for r in writer.rows}

    metrics_path = out_dir / "metrics.json"
    metrics = grade_to_files(bench, predictions, metrics_path, args)
    print(f"{summary(metrics)}; wrote {out_dir / 'predictions.jsonl'}, {metrics_path} and "
          f"{samples_path(metrics_path)}")
    return 0
