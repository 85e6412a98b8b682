"""Evaluation: :func:`evaluate` answers a benchmark with a model and grades it; :func:`grade`
grades given predictions (no model)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from leaf import distributed
from leaf.data.jsonl import Records, write_json_atomic, write_jsonl_atomic
from leaf.data.resumable import refuse_overwriting_inputs
from leaf.data.rowjob import RowJob, Work, on_one_process
from leaf.data.schema import read_samples
from leaf.evaluate.generation import Answer, make_generator, release
from leaf.evaluate.metrics import (
    aggregate,
    grade_all,
    match_predictions,
    read_predictions_and_cuts,
    samples_path,
    summary,
)
from leaf.evaluate.truncation import cut_warning
from leaf.stages._common import options_or_default, warn
from leaf.stages.options import EvalOptions, GradingOptions

__all__ = ["evaluate", "grade", "grade_to_files", "samples_path", "summary"]


def grade_to_files(bench: Sequence[dict[str, Any]], predictions: dict[str, list[str]],
                   out: str | Path, options: GradingOptions,
                   truncated: Mapping[str, Sequence[bool]] | None = None) -> dict[str, Any]:
    """Grade, write the metrics JSON to ``out`` and the per-sample rows beside it
    (:func:`samples_path`); return the metrics. ``truncated``: per id, which responses were
    cut at ``max_new_tokens`` (graded wrong)."""

    rows = grade_all(bench, predictions, truncated=truncated, workers=options.workers,
                     code_timeout=options.code_timeout)
    metrics = aggregate(rows, ks=options.k)
    write_jsonl_atomic(samples_path(out), rows)
    write_json_atomic(out, metrics)
    return metrics


def grade(bench: Records, predictions: Records | Mapping[str, str | list[str]],
          out: str | Path, options: GradingOptions | None = None) -> dict[str, Any]:
    """Grade ``predictions`` (a JSONL path, rows with ``id`` and ``response`` or
    ``responses``, or a mapping ``id -> response(s)``) against ``bench``.

    Every bench id needs a prediction and every prediction a bench id; a prediction marked
    ``truncated`` (cut at ``max_new_tokens``, as ``leaf eval`` writes it) is graded wrong.
    Writes the metrics JSON to ``out`` and the per-sample rows to ``OUT_STEM.samples.jsonl``;
    returns the metrics.
    """

    options = options_or_default(options, GradingOptions)
    for target in (out, samples_path(out)):
        refuse_overwriting_inputs(target, [bench, predictions])
    rows = read_samples(bench, need_response=False, need_grading=True, name="bench")
    answers, cuts = read_predictions_and_cuts(predictions)
    match_predictions(rows, answers, predictions if isinstance(predictions, str | Path)
                      else "predictions")
    return grade_to_files(rows, answers, out, options, cuts)


def evaluate(model: str | Path, bench: Records, out_dir: str | Path,
             options: EvalOptions | None = None) -> dict[str, Any]:
    """Answer every ``bench`` problem with ``model`` and grade the answers.

    Writes into ``out_dir``: ``predictions.jsonl`` (``id``, ``response``; or ``responses``
    with ``options.num_samples > 1``; ``truncated`` on a row whose answer was cut at
    ``max_new_tokens``: true, or one bool per response), ``metrics.json`` (with ``truncated``,
    the cut answers, graded wrong) and ``metrics.samples.jsonl``; returns the metrics. When
    more than :data:`leaf.evaluate.truncation.WARN_SHARE` of the answers were cut, a warning
    names the setting to raise. Predictions already in ``out_dir`` (or its ``.part``) are
    kept, unless the problem's text or the decoding settings changed (each row's
    ``input_hash``), and no model loads when every problem has one.
    """
    import dataclasses

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
                answers = generator.answers_n([s["instruction"] for s in chunk], n=n)
                yield [_prediction(s["id"], a) for s, a in zip(chunk, answers, strict=True)]
                bar.update(len(chunk))
        release(generator)

    # what makes a prediction: the problem's text and the decoding settings; a unit is one
    # generation chunk, so every batch holds the problems one process gives it
    made_by = {k: v for k, v in dataclasses.asdict(gen).items()
               if k not in ("batch_size", "device")}
    done = RowJob(out_dir / "predictions.jsonl", rows, unit=gen.chunk_size(), inputs=[bench],
                  fingerprint=lambda s: ("eval", s["instruction"], made_by, n)).run(answer)
    metrics = out_dir / "metrics.json"
    predictions, cuts = read_predictions_and_cuts(done.rows())
    # graded once; under a launcher the other processes read what it wrote
    result = on_one_process(
        lambda: grade_to_files(rows, predictions, metrics, options.grading, cuts),
        read=lambda: json.loads(metrics.read_text(encoding="utf-8")))
    message = cut_warning(result.get("truncated", 0), len(rows) * n, "answers", "evaluate",
                          gen.max_new_tokens)
    if message:
        warn("eval", message)
    return result


def _prediction(sid: str, answers: Sequence[Answer]) -> dict[str, Any]:
    """A predictions row: ``response`` (or ``responses``) and, when an answer was cut,
    ``truncated`` (true, or one bool per response)."""
    if len(answers) == 1:
        row: dict[str, Any] = {"id": sid, "response": answers[0].text}
        if answers[0].truncated:
            row["truncated"] = True
        return row
    row = {"id": sid, "responses": [a.text for a in answers]}
    if any(a.truncated for a in answers):
        row["truncated"] = [a.truncated for a in answers]
    return row
