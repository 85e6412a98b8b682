"""``leaf detect``: teacher and student input-gradient saliency -> scores.jsonl."""

from __future__ import annotations

import argparse

from leaf.errors import LeafError

CUDA_BATCH_SIZE = 4

NAME = "detect"
HELP = "score every instruction (and response-prefix) token: teacher vs student saliency"
DESCRIPTION = """\
Compute, for each sample, the input-gradient saliency g_i = ||dL/de(x_i)||_2 of the teacher and
of the student (L: mean cross-entropy of the gold response, teacher forcing), min-max normalise
each, and write their normalised difference per unit (token, or word when the two tokenizers
split the text differently). Low `diff` marks tokens the student leans on and the teacher ignores.

Reads  --data samples.jsonl (id, task, instruction, response; screened files from `leaf screen`
       are filtered to teacher-right/student-wrong rows unless --all).
Writes --out scores.jsonl, one row per sample and scored text: id, level, segment, field,
       prefix_end, unit_kind, units ([start, end) character spans), teacher, student, diff,
       teacher_raw, student_raw, student_nll. Levels: `instruction` scores the instruction
       (segment 0); `response` splits the gold response into --segments parts and scores the
       prefix before each boundary k (segment k, loss on the rest); `both` does both.
Resume: the output is written to OUT.part and renamed when done; run the same command again after
an interruption and finished samples are skipped.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, metavar="DIR",
                   help="teacher model directory (or hub id)")
    p.add_argument("--student", required=True, metavar="DIR",
                   help="student model directory (or hub id)")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="samples JSONL (or screened.jsonl)")
    p.add_argument("--out", required=True, metavar="FILE", help="scores JSONL to write")
    p.add_argument("--level", choices=("instruction", "response", "both"), default="instruction",
                   help="what to score (default: instruction)")
    p.add_argument("--segments", type=int, default=2, metavar="K",
                   help="response segments K for --level response/both (default 2; paper: 2, 3)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="sequences per forward/backward pass (default: 1 on CPU, where batching "
                        "only adds padding and memory, measured in docs/PERFORMANCE.md; "
                        f"{CUDA_BATCH_SIZE} on a GPU)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="weights' dtype (default float32; gradients are normed in float32)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: GPUs when visible (device_map=auto), else CPU")
    p.add_argument("--all", action="store_true",
                   help="score every sample, not only teacher-right/student-wrong ones")


def default_batch_size(device: str) -> int:
    """1 on CPU (one sequence already fills the matrix kernels), CUDA_BATCH_SIZE on a GPU."""
    if device == "cpu":
        return 1
    import torch

    return CUDA_BATCH_SIZE if device == "cuda" or torch.cuda.is_available() else 1


def select_samples(samples: list[dict], score_all: bool) -> list[dict]:
    """Screened rows (both correctness fields present) are kept when teacher right, student wrong."""
    if score_all:
        return samples
    return [
        s for s in samples
        if not ("teacher_correct" in s and "student_correct" in s)
        or (s["teacher_correct"] is True and s["student_correct"] is False)
    ]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from leaf.data.jsonl import ResumableWriter
    from leaf.data.schema import read_samples
    from leaf.detect.scorer import Scorer, score_samples
    from leaf.models import check_model_path, load_model, load_tokenizer

    if args.segments < 2:
        raise LeafError(f"--segments must be at least 2, got {args.segments}")
    if args.batch_size is None:
        args.batch_size = default_batch_size(args.device)
    if args.batch_size < 1:
        raise LeafError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_model_path(args.teacher, "teacher")
    check_model_path(args.student, "student")
    samples = select_samples(read_samples(args.data), args.all)

    student_tok = load_tokenizer(args.student, "student")
    with ResumableWriter(args.out, key=lambda r: r["id"]) as writer:
        _check_resume(writer.rows, samples, args, student_tok)
        todo = [s for s in samples if s["id"] not in writer.done]
        if todo:
            teacher = Scorer(load_model(args.teacher, args.dtype, args.device, "teacher"),
                             load_tokenizer(args.teacher, "teacher"))
            student = Scorer(load_model(args.student, args.dtype, args.device, "student"),
                             student_tok)
            bar = tqdm(total=len(todo), desc="detect", unit="sample")
            for _, rows in score_samples(teacher, student, todo, args.level, args.segments,
                                         args.batch_size):
                writer.write(rows)
                bar.update(1)
            bar.close()
    n_done = len(samples) - len(todo)
    print(f"leaf detect: {len(todo)} scored, {n_done} already done, "
          f"{len(samples)} selected -> {args.out}")
    return 0


def _check_resume(rows: list[dict], samples: list[dict], args, tokenizer) -> None:
    """Refuse to resume into an output written with another --level or --segments."""
    from leaf.detect.scorer import plan_jobs

    by_id = {s["id"]: s for s in samples}
    found: dict[str, set] = {}
    for r in rows:
        found.setdefault(r.get("id"), set()).add((r.get("level"), r.get("segment"),
                                                   r.get("prefix_end")))
    for sid, got in found.items():
        if sid not in by_id:
            continue
        want = {(j.level, j.segment, j.prefix_end)
                for j in plan_jobs(by_id[sid], args.level, args.segments, tokenizer)}
        missing_level = {lv for lv, _, _ in want} - {lv for lv, _, _ in got}
        if not got <= want or missing_level:
            raise LeafError(
                f"{args.out} (or its .part) holds rows for sample {sid!r} that another --level "
                "or --segments wrote; use a new --out, or delete the old file to start over"
            )
