"""Evaluation: :func:`evaluate` answers a benchmark with a model and grades it; :func:`grade`
grades given predictions (no model)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from leaf import distributed
from leaf.data.jsonl import Records
from leaf.data.resumable import refuse_overwriting_inputs
from leaf.data.rowjob import RowJob, Work, on_one_process
from leaf.evaluate.metrics import samples_path, summary
from leaf.stages._common import options_or_default
from leaf.stages.options import EvalOptions, GradingOptions

__all__ = ["evaluate", "grade", "grade_to_files", "samples_path", "summary"]


def grade_to_files(bench: Sequence[dict[str, Any]], predictions: dict[str, list[str]],
                   out: str | Path, options: GradingOptions) -> dict[str, Any]:
    """Grade, write the metrics JSON to ``out`` and the per-sample rows beside it
    (:func:`samples_path`); return the metrics."""
    from leaf.data.jsonl import write_json_atomic, write_jsonl_atomic
    from leaf.evaluate.metrics import aggregate, grade_all

    rows = grade_all(bench, predictions, workers=options.workers,
                     code_timeout=options.code_timeout)
    metrics = aggregate(rows, ks=options.k)
    write_jsonl_atomic(samples_path(out), rows)
    write_json_atomic(out, metrics)
    return metrics


def grade(bench: Records, predictions: Records | Mapping[str, str | list[str]],
          out: str | Path, options: GradingOptions | None = None) -> dict[str, Any]:
    """Grade ``predictions`` (a JSONL path, rows with ``id`` and ``response`` or
    ``responses``, or a mapping ``id -> response(s)``) against ``bench``.

    Every bench id needs a prediction and every prediction a bench id. Writes the metrics JSON
    to ``out`` and the per-sample rows to ``OUT_STEM.samples.jsonl``; returns the metrics.
    """
    from leaf.data.schema import read_samples
    from leaf.evaluate.metrics import match_predictions, read_predictions

    options = options_or_default(options, GradingOptions)
    for target in (out, samples_path(out)):
        refuse_overwriting_inputs(target, [bench, predictions])
    rows = read_samples(bench, need_response=False, need_grading=True, name="bench")
    answers = read_predictions(predictions)
    match_predictions(rows, answers, predictions if isinstance(predictions, str | Path)
                      else "predictions")
    return grade_to_files(rows, answers, out, options)


def evaluate(model: str | Path, bench: Records, out_dir: str | Path,
             options: EvalOptions | None = None) -> dict[str, Any]:
    """Answer every ``bench`` problem with ``model`` and grade the answers.

    Writes into ``out_dir``: ``predictions.jsonl`` (``id``, ``response``; or ``responses``
    with ``options.num_samples > 1``), ``metrics.json`` and ``metrics.samples.jsonl``; returns
    the metrics. Predictions already in ``out_dir`` (or its ``.part``) are kept, unless the
    problem's text or the decoding settings changed (each row's ``input_hash``), and
    no model loads when every problem has one.
    """
    import dataclasses

    from leaf.data.schema import read_samples
    from leaf.evaluate.generation import make_generator, release

    options = options_or_default(options, EvalOptions)
    distributed.init()  # under a launcher: this process's GPUs, before CUDA starts
    rows = read_samples(bench, need_response=False, need_grading=True, name="bench")
    gen, n = options.generation, options.num_samples
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def answer(work: Work) -> Iterator[list[dict]]:
        generator = make_generator(str(model), backend=gen.backend, dtype=gen.dtype,
                                   device=gen.device, settings=gen.settings())
        with distributed.progress(len(work.items), "eval (generate)", unit="problem") as bar:
            for chunk in work.chunks:
                answers = generator.generate_n([s["instruction"] for s in chunk], n=n)
                yield [{"id": s["id"], "response": a[0]} if n == 1 else
                       {"id": s["id"], "responses": a}
                       for s, a in zip(chunk, answers, strict=True)]
                bar.update(len(chunk))
        release(generator)

    # what makes a prediction: the problem's text and the decoding settings; a unit is one
    # generation chunk, so every batch holds the problems one process gives it
    made_by = {k: v for k, v in dataclasses.asdict(gen).items()
               if k not in ("batch_size", "device")}
    done = RowJob(out_dir / "predictions.jsonl", rows, unit=gen.chunk_size(), inputs=[bench],
                  fingerprint=lambda s: ("eval", s["instruction"], made_by, n)).run(answer)
    metrics = out_dir / "metrics.json"
    # graded once; under a launcher the other processes read what it wrote
    return on_one_process(
        lambda: grade_to_files(rows, {r["id"]: r.get("responses") or [r["response"]]
                                      for r in done.rows()}, metrics, options.grading),
        read=lambda: json.loads(metrics.read_text(encoding="utf-8")))
