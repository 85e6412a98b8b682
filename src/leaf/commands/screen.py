"""leaf screen: teacher and student answer every sample; record who is right."""

from __future__ import annotations

import argparse
from pathlib import Path

from leaf.commands._generation import add_generation_arguments, chunk_size, settings_from

NAME = "screen"
HELP = "let teacher and student answer every sample and grade both (stage 1, step 1)"
DESCRIPTION = """\
Reads samples (JSONL: id, task, instruction, answer | tests + entry_point) and writes
screened.jsonl: every sample's fields plus teacher_response, student_response (generated text,
greedy unless --temperature) and teacher_correct, student_correct (bool). `leaf detect` then
scores the samples the student gets wrong and the teacher right.

The teacher answers first and its answers are kept in OUT.teacher until the student is done,
so only one model is in memory at a time. Interrupted runs resume where they stopped.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="teacher model directory or hub id")
    parser.add_argument("--student", required=True, help="student model directory or hub id")
    parser.add_argument("--data", required=True, help="samples JSONL")
    parser.add_argument("--out", required=True, help="screened JSONL to write")
    add_generation_arguments(parser)


def _answer_all(model: str, todo: list[dict], on_chunk, label: str, args) -> None:
    """Answer ``todo`` with ``model`` one batch at a time; ``on_chunk(samples, answers)``."""
    from tqdm.auto import tqdm

    from leaf.evaluate.generation import make_generator, release

    if not todo:
        return
    settings = settings_from(args)
    generator = make_generator(model, backend=args.backend, dtype=args.dtype,
                               device=args.device, settings=settings)
    step = chunk_size(args)
    with tqdm(total=len(todo), desc=f"screen ({label})", unit="sample") as bar:
        for lo in range(0, len(todo), step):
            chunk = todo[lo:lo + step]
            on_chunk(chunk, generator.generate([s["instruction"] for s in chunk]))
            bar.update(len(chunk))
    release(generator)


def run(args: argparse.Namespace) -> int:
    from leaf.data.jsonl import ResumableWriter
    from leaf.data.schema import read_samples
    from leaf.evaluate.grading import grade

    samples = read_samples(args.data, need_response=False, need_grading=True)
    out = Path(args.out)
    teacher_path = out.with_name(out.name + ".teacher")

    with ResumableWriter(out, key=lambda r: r["id"]) as final:
        pending = [s for s in samples if s["id"] not in final.done]
        if pending:
            with ResumableWriter(teacher_path, key=lambda r: r["id"]) as cache:
                _answer_all(
                    args.teacher, [s for s in pending if s["id"] not in cache.done],
                    lambda chunk, answers: cache.write(
                        [{"id": s["id"], "teacher_response": a}
                         for s, a in zip(chunk, answers, strict=True)]),
                    "teacher", args)
                teacher = {r["id"]: r["teacher_response"] for r in cache.rows}

            def record(chunk: list[dict], answers: list[str]) -> None:
                final.write([{**s, "teacher_response": teacher[s["id"]],
                              "student_response": a,
                              "teacher_correct": bool(grade(s, teacher[s["id"]])["correct"]),
                              "student_correct": bool(grade(s, a)["correct"])}
                             for s, a in zip(chunk, answers, strict=True)])

            _answer_all(args.student, pending, record, "student", args)
        rows = {r["id"]: r for r in final.rows}
    teacher_path.unlink(missing_ok=True)
    n_t = sum(rows[s["id"]]["teacher_correct"] for s in samples)
    n_s = sum(rows[s["id"]]["student_correct"] for s in samples)
    target = sum(rows[s["id"]]["teacher_correct"] and not rows[s["id"]]["student_correct"]
                 for s in samples)
    print(f"teacher correct {n_t}/{len(samples)}, student correct {n_s}/{len(samples)}, "
          f"teacher right and student wrong {target}; wrote {out}")
    return 0
