"""Stage 1, confounding-token detection: :func:`screen`, :func:`detect`, :func:`prune`.

Each function reads its inputs (a JSONL path, or for ``data`` the sample dicts themselves,
checked by the same rules, errors naming ``data[i]``), writes its output through
``OUT.part`` (renamed when done; a rerun resumes from it) and returns a small summary whose
``str()`` is the line ``leaf <stage>`` prints. Options are checked when they are made, so a bad
value fails before any model loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf import distributed
from leaf.data.jsonl import Records
from leaf.data.lengths import context_length, refuse_too_long
from leaf.data.rowjob import RowJob, Work, on_one_process
from leaf.data.schema import read_samples
from leaf.detect.counterfactuals import PruneOptions, sample_rows
from leaf.detect.scores_file import read_scores, text_hash
from leaf.distill.signal import (
    LOW_SIGNAL_LINE,
    SignalFigures,
    measure_kept,
    read_signal,
    signal_file,
)
from leaf.errors import LeafError
from leaf.evaluate.generation import Answer, make_generator, release
from leaf.evaluate.grading import grade
from leaf.evaluate.truncation import cut_warning
from leaf.models import check_model_path, load_model, load_tokenizer
from leaf.settings import SettingError
from leaf.stages._common import options_or_default, warn
from leaf.stages.options import DetectOptions, GenerationOptions, VerifyOptions

__all__ = ["DetectSummary", "PruneSummary", "ScreenSummary", "detect", "prune", "read_signal",
           "screen", "select_samples", "signal_file"]


# ---------------------------------------------------------------------------------------------
# screen


@dataclass(frozen=True)
class ScreenSummary:
    """Counts over every sample of a screened file (resumed rows included)."""

    n: int
    teacher_correct: int
    student_correct: int
    teacher_right_student_wrong: int
    out: Path
    redone: int = 0
    teacher_truncated: int = 0
    student_truncated: int = 0

    def __str__(self) -> str:
        redone = (f" ({self.redone} samples redone: their sample or settings changed)"
                  if self.redone else "")
        return (f"teacher correct {self.teacher_correct}/{self.n}, student correct "
                f"{self.student_correct}/{self.n}, teacher right and student wrong "
                f"{self.teacher_right_student_wrong}; answers cut at max_new_tokens (graded "
                f"wrong): teacher {self.teacher_truncated}, student {self.student_truncated}; "
                f"wrote {self.out}{redone}")


def _generation_settings(options: GenerationOptions) -> dict[str, Any]:
    """The decoding settings that change answers (not batch size or device)."""
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(options).items()
            if k not in ("batch_size", "device")}


def _answers(model: str, work: Work, label: str, options: GenerationOptions,
             row: Callable[[dict, Answer], dict]) -> Iterator[list[dict]]:
    """Answer the samples of ``work`` with ``model`` a unit (one generation chunk) at a time,
    yielding ``row(sample, answer)`` for each sample of the unit."""

    generator = make_generator(model, backend=options.backend, dtype=options.dtype,
                               device=options.device, settings=options.settings())
    with distributed.progress(len(work.items), f"screen ({label})") as bar:
        for chunk in work.chunks:
            answers = generator.answers([s["instruction"] for s in chunk])
            yield [row(s, a) for s, a in zip(chunk, answers, strict=True)]
            bar.update(len(chunk))
    release(generator)


def screen(teacher: str | Path, student: str | Path, data: Records, out: str | Path,
           options: GenerationOptions | None = None) -> ScreenSummary:
    """Let teacher and student answer every sample and grade both answers.

    Writes ``out``: every sample's fields plus ``teacher_response``, ``student_response`` and
    ``teacher_correct``, ``student_correct`` (bool); ``teacher_truncated`` /
    ``student_truncated`` (true) on a row whose answer was cut at ``max_new_tokens``, which is
    graded wrong (a warning names the setting to raise when more than
    :data:`leaf.evaluate.truncation.WARN_SHARE` of a model's answers were). The teacher answers
    first and its answers wait in ``OUT.teacher`` until the student is done, so one model is in
    memory at a time. Samples already in ``out`` (or ``OUT.part``) are kept, and no model loads
    when none is left.
    """

    options = options_or_default(options, GenerationOptions)
    distributed.init()  # under a launcher: this process's GPUs, before CUDA starts
    samples = read_samples(data, need_response=False, need_grading=True)
    out = Path(out)
    gen = _generation_settings(options)
    step = options.chunk_size()

    def answer(work: Work) -> Iterator[list[dict]]:
        # the teacher answers first, into a side file (resumable too) where its answers wait
        # until the student is done, so one model is in memory at a time
        teacher_job = RowJob(work.side_file(".teacher"), work.items, unit=step, local=True,
                             fingerprint=lambda s: ("screen-teacher", s["instruction"], gen))
        by_teacher = teacher_job.run(lambda todo: _answers(
            str(teacher), todo, "teacher", options,
            lambda s, a: {"id": s["id"], "teacher_response": a.text,
                          **({"teacher_truncated": True} if a.truncated else {})}))
        answers = {r["id"]: Answer(r["teacher_response"], bool(r.get("teacher_truncated")))
                   for r in by_teacher.rows()}
        yield from _answers(str(student), work, "student", options,
                            lambda s, a: _screened_row(s, answers[s["id"]], a))

    # what makes a row: the sample (its answers are graded against it) and the decoding; a
    # unit is one generation chunk, so every batch holds the samples one process gives it
    done = RowJob(out, samples, fingerprint=lambda s: ("screen", s, gen), unit=step,
                  inputs=[data], side_files=[".teacher"]).run(answer)
    rows = {r["id"]: r for r in done.rows()}
    screened = [rows[s["id"]] for s in samples]
    summary = ScreenSummary(
        n=len(samples),
        teacher_correct=sum(bool(r["teacher_correct"]) for r in screened),
        student_correct=sum(bool(r["student_correct"]) for r in screened),
        teacher_right_student_wrong=sum(bool(r["teacher_correct"] and not r["student_correct"])
                                        for r in screened),
        out=out, redone=done.redone,
        teacher_truncated=sum(bool(r.get("teacher_truncated")) for r in screened),
        student_truncated=sum(bool(r.get("student_truncated")) for r in screened))
    for who, cut in (("teacher", summary.teacher_truncated),
                     ("student", summary.student_truncated)):
        message = cut_warning(cut, summary.n, f"{who} answers", "screen",
                              options.max_new_tokens)
        if message:
            warn("screen", message)
    return summary


def _screened_row(sample: dict, teacher: Answer, student: Answer) -> dict:
    """A screened row: the sample, both answers and their grades (a cut answer is wrong and
    marked ``MODEL_truncated``)."""
    row = {**sample, "teacher_response": teacher.text, "student_response": student.text,
           "teacher_correct": bool(grade(sample, teacher.text,
                                         truncated=teacher.truncated)["correct"]),
           "student_correct": bool(grade(sample, student.text,
                                         truncated=student.truncated)["correct"])}
    if teacher.truncated:
        row["teacher_truncated"] = True
    if student.truncated:
        row["student_truncated"] = True
    return row


# ---------------------------------------------------------------------------------------------
# detect


@dataclass(frozen=True)
class DetectSummary:
    """``scored`` samples now, ``already_done`` kept from an earlier run, of ``selected``;
    ``redone`` of the scored ones had rows from an earlier run made from other input."""

    scored: int
    already_done: int
    selected: int
    out: Path
    redone: int = 0

    def __str__(self) -> str:
        redone = (f" ({self.redone} redone: their text or settings changed)"
                  if self.redone else "")
        return (f"leaf detect: {self.scored} scored{redone}, {self.already_done} already done, "
                f"{self.selected} selected -> {self.out}")


def select_samples(samples: list[dict], score_all: bool = False) -> list[dict]:
    """The samples detection scores: screened rows (both correctness fields present) only when
    the teacher is right and the student wrong, unless ``score_all``; other rows always."""
    if score_all:
        return samples
    return [
        s for s in samples
        if not ("teacher_correct" in s and "student_correct" in s)
        or (s["teacher_correct"] is True and s["student_correct"] is False)
    ]


def _check_detect_resume(rows: list[dict], samples: list[dict], options: DetectOptions,
                         tokenizer, out: Path, texts: dict[str, str],
                         teacher_tokenizer=None) -> None:
    """Refuse to resume into an output written with another level or number of segments.

    ``texts``: each sample's current ``text_hash``; rows made from another text are passed over
    (they are redone)."""
    from leaf.detect.score_samples import plan_jobs  # heavy: torch

    by_id = {s["id"]: s for s in samples}
    found: dict[str, set] = {}
    for r in rows:
        if r.get("id") in texts and r.get("text_hash") not in (None, texts[r.get("id")]):
            continue  # made from another text: redone whatever the settings
        if r.get("skip_last", 0) != (options.skip_last if r.get("level") == "instruction"
                                     else 0):
            raise LeafError(
                f"{out} (or its .part) holds rows scored with --skip-last "
                f"{r.get('skip_last', 0)}, not {options.skip_last}; use a new --out, or delete "
                "the old file to start over")
        found.setdefault(r.get("id"), set()).add((r.get("level"), r.get("segment"),
                                                   r.get("prefix_end")))
    for sid, got in found.items():
        if sid not in by_id:
            continue
        want = {(j.level, j.segment, j.prefix_end)
                for j in plan_jobs(by_id[sid], options.level, options.segments, tokenizer,
                                   teacher_tokenizer)}
        missing_level = {lv for lv, _, _ in want} - {lv for lv, _, _ in got}
        if not got <= want or missing_level:
            raise LeafError(
                f"{out} (or its .part) holds rows for sample {sid!r} that another --level "
                "or --segments wrote; use a new --out, or delete the old file to start over"
            )


def _detect_limit(options: DetectOptions, teacher: str, student: str) -> tuple[int | None, str]:
    """The most tokens a sample may have, and where that limit comes from."""

    if options.max_length is not None:
        return options.max_length, "max_length"
    known = [(n, who) for n, who in ((context_length(teacher), "teacher"),
                                     (context_length(student), "student")) if n]
    if not known:
        return None, ""
    n, who = min(known)
    return n, f"the {who}'s context length"


def detect(teacher: str | Path, student: str | Path, data: Records, out: str | Path,
           options: DetectOptions | None = None) -> DetectSummary:
    """Score every selected sample: teacher vs student input-gradient saliency per unit.

    Writes ``out`` (one row per sample and scored text; see ``leaf detect --help`` for the
    fields). Screened rows are filtered to teacher-right/student-wrong unless
    ``options.score_all``. Samples already in ``out`` (or ``OUT.part``) are skipped, unless
    their text or the settings changed (each row's ``input_hash``): those are scored again.
    Samples longer than ``options.max_length`` (default: the models' context) are refused,
    each named, before any model loads.
    """
    from leaf.detect.score_samples import Scorer, score_samples  # heavy: torch

    options = options_or_default(options, DetectOptions)
    distributed.init()  # under a launcher: this process's GPUs, before CUDA starts
    teacher, student, out = str(teacher), str(student), Path(out)
    check_model_path(teacher, "teacher")
    check_model_path(student, "student")
    samples = select_samples(read_samples(data), options.score_all)
    batch_size = options.resolved_batch_size()

    student_tok = load_tokenizer(student, "student")
    teacher_tok = load_tokenizer(teacher, "teacher")
    limit, why = _detect_limit(options, teacher, student)
    if limit is not None:
        for tok in (student_tok, teacher_tok):
            refuse_too_long(samples, tok, limit, data, why)
    texts = {s["id"]: text_hash(s) for s in samples}
    chunk = 4 * batch_size

    def score(work: Work) -> Iterator[list[dict]]:
        teacher_scorer = Scorer(load_model(teacher, options.dtype, options.device, "teacher"),
                                teacher_tok)
        student_scorer = Scorer(load_model(student, options.dtype, options.device, "student"),
                                student_tok)
        with distributed.progress(len(work.items), "detect") as bar:
            for unit in work.chunks:
                rows = []
                for sid, scored in score_samples(
                        teacher_scorer, student_scorer, unit, options.level, options.segments,
                        batch_size, chunk=chunk, skip_last=options.skip_last):
                    rows += [{**r, "text_hash": texts[sid]} for r in scored]
                    bar.update(1)
                yield rows

    # what makes a row: the sample's text and the settings that change its numbers (models are
    # named by path, which says nothing of their weights: other models need another --out)
    made_by = {"level": options.level, "segments": options.segments, "dtype": options.dtype}
    # a unit is one chunk of score_samples (4 x batch_size samples, batches sorted by length
    # within it), written at once: a resume starts at a unit boundary, so its batches, and the
    # numbers, are those of an uninterrupted run
    done = RowJob(out, samples, fingerprint=lambda s: ("detect", texts[s["id"]], made_by),
                  unit=chunk, inputs=[data],
                  check=lambda rows: _check_detect_resume(rows, samples, options, student_tok,
                                                          out, texts, teacher_tok)).run(score)
    return DetectSummary(scored=done.made, already_done=done.already_done,
                         selected=len(samples), out=out, redone=done.redone)


# ---------------------------------------------------------------------------------------------
# prune


@dataclass(frozen=True)
class PruneSummary:
    """``samples`` pruned now (``already_done`` kept from an earlier run), the
    ``counterfactuals`` they gave and, with verification, how many were ``verified`` and how
    many were rejected because the teacher's or student's answer was ``truncated``."""

    samples: int
    counterfactuals: int
    verified: int | None
    already_done: int
    out: Path
    redone: int = 0
    truncated: int | None = None
    signal: SignalFigures | None = None  # with verification: the kept rows' KL (signal_file)
    signal_note: str | None = None  # why the signal was not measured

    def __str__(self) -> str:
        msg = f"leaf prune: {self.samples} samples, {self.counterfactuals} counterfactuals"
        if self.verified is not None:
            msg += f", {self.verified} verified"
        if self.truncated is not None:
            msg += (f", {self.truncated} rejected because an answer was cut at "
                    "max_new_tokens")
        if self.already_done:
            msg += f" ({self.already_done} samples already done)"
        if self.redone:
            msg += f" ({self.redone} samples redone: their sample, scores or settings changed)"
        msg += f" -> {self.out}"
        if self.signal is not None:
            msg += f"\nleaf prune: signal: {self.signal}"
            if self.signal.low:
                msg += f"\nleaf prune: warning: {LOW_SIGNAL_LINE}"
        elif self.signal_note:
            msg += f"\nleaf prune: signal: {self.signal_note}"
        return msg


def _measure_signal(rows: list[dict[str, Any]], verify: VerifyOptions, out: Path
                    ) -> tuple[SignalFigures | None, str | None]:
    """The kept counterfactuals' KL figures against their originals (:func:`measure_kept`)."""
    g = verify.generation
    return measure_kept(rows, str(verify.teacher), str(verify.student), signal_file(out),
                        dtype=g.dtype, device=g.device, batch_size=g.batch_size)


def _check_prune_resume(rows: list[dict[str, Any]], options: PruneOptions, verify: bool,
                        out: Path) -> None:
    for r in rows:
        if r.get("kind") != "counterfactual":
            continue
        if r.get("masking") != options.masking or r.get("strategy") != options.strategy:
            raise LeafError(
                f"{out} already holds rows made with --masking {r.get('masking')} "
                f"--strategy {r.get('strategy')}; delete it (and {out}.part) or choose "
                "another --out"
            )
        if (r.get("verified") is None) == verify:
            raise LeafError(f"{out} was started {'without' if verify else 'with'} "
                            "--verify; delete it or choose another --out")


def _verify(rows: list[dict[str, Any]], verify: VerifyOptions) -> None:
    """Set ``verified`` on the counterfactual rows in place, and ``truncated`` (true) on those
    whose teacher or student answer was cut at ``max_new_tokens`` (never verified)."""
    todo = [r for r in rows if r["kind"] == "counterfactual"]
    if not todo:
        return
    try:
        from leaf.evaluate.verify import check_counterfactuals
    except ImportError as exc:
        raise LeafError(f"--verify needs leaf.evaluate.verify, which failed to import ({exc})"
                        ) from None
    g = verify.generation
    # the sampling knobs are passed only when they differ from greedy hf decoding
    extra = {k: v for k, v, default in (("backend", g.backend, "hf"),
                                        ("temperature", g.temperature, 0.0),
                                        ("top_p", g.top_p, 1.0), ("seed", g.seed, 0))
             if v != default}
    checks = check_counterfactuals(todo, verify.teacher, verify.student,
                                   batch_size=g.batch_size, max_new_tokens=g.max_new_tokens,
                                   device=g.device, dtype=g.dtype, **extra)
    if len(checks) != len(todo):
        raise LeafError(f"check_counterfactuals returned {len(checks)} results for "
                        f"{len(todo)} rows")
    for row, check in zip(todo, checks, strict=True):
        row["verified"] = bool(check.ok) and not check.truncated
        if check.truncated:
            row["truncated"] = True


def _sample_rows(sample: dict, score_rows: dict | None, options: PruneOptions) -> list[dict]:

    try:
        return sample_rows(sample, None if score_rows is None else
                           score_rows.get(sample["id"], []), options)
    except ValueError as exc:  # planted masking on a row without planted spans
        raise LeafError(str(exc)) from None


def prune(data: Records, scores: Records | None, out: str | Path,
          options: PruneOptions | None = None,
          verify: VerifyOptions | None = None) -> PruneSummary:
    """Turn confounder scores into counterfactual samples.

    Writes ``out``: every sample's ``original`` row followed by its ``counterfactual`` rows
    (see :mod:`leaf.detect.counterfactuals`). With ``verify``, teacher and student answer each
    counterfactual and ``verified`` is true or false (rejected rows are kept; a row whose
    teacher or student answer was cut at ``max_new_tokens`` is rejected and marked
    ``truncated``, with a warning when more than
    :data:`leaf.evaluate.truncation.WARN_SHARE` were); samples are
    verified ``verify.chunk`` at a time, one model load per chunk, the output saved after each.
    Samples already in ``out`` (or ``OUT.part``) are kept, unless the sample, its scores or a
    setting changed since (each row's ``input_hash``): those are pruned again. Resuming with
    another masking, strategy or verification setting is refused, and so are scores whose
    ``text_hash`` says they were computed from another text of the sample. ``scores`` may be
    None only with ``options.masking == "planted"`` (the testbed oracle), which then prunes
    every sample; with scores it prunes the samples they cover, like the other rules.
    """
    import dataclasses

    options = options_or_default(options, PruneOptions)
    distributed.init()  # under a launcher: this process's GPUs, before CUDA starts
    if verify is not None:
        verify = options_or_default(verify, VerifyOptions, "verify")
    out = Path(out)
    samples = read_samples(data)
    by_id = {s["id"]: s for s in samples}
    if scores is None and options.masking != "planted":
        raise SettingError("scores: needed unless options.masking is 'planted'")
    score_rows = None if scores is None else \
        read_scores(scores, by_id, need_nll=options.masking == "ppl")
    counted = {"counterfactuals": 0, "verified": 0, "truncated": 0}  # made by this run

    def build(work: Work) -> Iterator[list[dict]]:
        with distributed.progress(len(work.items), "prune", disable=None) as bar:
            for chunk in work.chunks:
                rows = [r for s in chunk for r in _sample_rows(s, score_rows, options)]
                if verify is not None:
                    _verify(rows, verify)
                counted["counterfactuals"] += sum(r["kind"] == "counterfactual" for r in rows)
                counted["verified"] += sum(r["verified"] is True for r in rows)
                counted["truncated"] += sum(bool(r.get("truncated")) for r in rows)
                yield rows
                bar.update(len(chunk))

    # what makes a sample's rows: the sample, its scores and the settings that change them
    made_by: dict[str, Any] = {"options": dataclasses.asdict(options), "verify": None}
    if verify is not None:
        made_by["verify"] = _generation_settings(verify.generation)
    # a unit is a sample, or with verification one chunk of samples whose counterfactuals share
    # a model load and are written at once: a resume starts at a chunk boundary, so the
    # verification batches (and their answers) are those of an uninterrupted run
    done = RowJob(out, samples, row_key=lambda r: r["origin_id"],
                  fingerprint=lambda s: ("prune", s, None if score_rows is None
                                         else score_rows.get(s["id"], []), made_by),
                  unit=(verify.chunk or len(samples)) if verify is not None else 1,
                  check=lambda rows: _check_prune_resume(rows, options, verify is not None, out),
                  inputs=[data, scores]).run(build)
    n_cf, n_ok, n_cut = done.sum(counted["counterfactuals"], counted["verified"],
                                 counted["truncated"])
    if verify is not None:
        message = cut_warning(n_cut, n_cf, "counterfactuals (a teacher or student answer)",
                              "screen", verify.generation.max_new_tokens)
        if message:
            warn("prune", message)
    signal: tuple[SignalFigures | None, str | None] | None = (None, None)
    if verify is not None and not verify.skip_signal:
        # one forward of each model on the rows just written (the Hugging Face models, whatever
        # backend generated); made once under a launcher, read by the other ranks
        signal = on_one_process(lambda: _measure_signal(done.rows(), verify, out),
                                lambda: (read_signal(out), None))
    figures, note = signal if signal is not None else (None, None)
    return PruneSummary(samples=done.made, counterfactuals=n_cf,
                        verified=n_ok if verify is not None else None,
                        already_done=done.already_done, out=out, redone=done.redone,
                        truncated=n_cut if verify is not None else None,
                        signal=figures, signal_note=note)
