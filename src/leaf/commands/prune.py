"""``leaf prune``: scores + samples -> counterfactual samples (LeaF stage 1, steps 4-7)."""

from __future__ import annotations

import argparse
import sys

from leaf.commands._data import add_columns_argument, data_source
from leaf.commands._options import (
    MODEL_HELP,
    add_device,
    add_dtype,
    add_option,
    build,
    model_ref,
)
from leaf.errors import LeafError
from leaf.stages.options import GenerationOptions, PruneOptions, VerifyOptions

NAME = "prune"
HELP = "turn confounder scores into counterfactual samples (span or collective pruning)"
DESCRIPTION = """\
Reads the samples (--data: JSONL or any format of --columns) and the per-unit scores written
by `leaf detect` (--scores), flags candidate confounders (normalised teacher-minus-student
saliency difference <= threshold; whitespace-only units never), groups contiguous candidates into
character spans and removes them: one counterfactual per span (--strategy span, the paper's
choice) or one with every span removed (--strategy collective).

Writes --out (JSONL): for every sample an `original` row (kind, origin_id, level,
pruned=[], verified=null) followed by its `counterfactual` rows (id "<id>#i<j>" for the
instruction, "<id>#r<k>.<j>" for response segment k; `pruned` holds the removed
[start, end) character spans of the original text; response rows carry `prefix` and
`target`). --masking random|ppl replaces the gradient rule by the paper's baselines (same
number of units per text). With --verify, each counterfactual is answered by both models
and `verified` is true or false (rejected rows are kept, with false, so reports can show
them; training must skip them; a row whose answer was cut at --max-new-tokens is rejected and
marked `truncated`); without it `verified` is null. Verification also measures the kept
counterfactuals' KL(teacher || student) on the response tokens against their originals' (one
forward of each model per row, written to OUT with suffix .signal.json) and prints both with
their ratio; --no-signal skips it.

Resumable: run the same command again to continue an interrupted run; samples whose row,
scores or settings changed since are pruned again (each row's `input_hash`). Scores whose
`text_hash` does not match the --data row are refused, and so is an --out that is an input.
(Python: leaf.stages.prune.) See docs/pruning.md for the exact rules, including whitespace at a cut."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="samples (id, task, instruction, response): JSONL or any format of "
                        "--columns")
    p.add_argument("--scores", help="scores JSONL written by `leaf detect` (not needed with "
                                    "--masking planted, which then prunes every sample)")
    p.add_argument("--out", required=True, help="counterfactuals JSONL to write")
    for field in ("threshold_mode", "tau", "quantile", "strategy", "masking", "seed"):
        add_option(p, PruneOptions, field)
    p.add_argument("--verify", action="store_true",
                   help="keep the answer check: both --teacher and --student must answer each "
                        "counterfactual correctly (sets `verified`)")
    p.add_argument("--teacher", type=model_ref, metavar="MODEL",
                   help=f"teacher model for --verify: {MODEL_HELP}")
    p.add_argument("--student", type=model_ref, metavar="MODEL",
                   help=f"student model for --verify: {MODEL_HELP}")
    add_option(p, GenerationOptions, "batch_size", what="with --verify: ")
    add_option(p, GenerationOptions, "max_new_tokens", what="with --verify: ")
    add_option(p, VerifyOptions, "chunk", "--verify-chunk")
    add_option(p, VerifyOptions, "skip_signal", "--no-signal", what="with --verify: ",
               dest="skip_signal")
    add_device(p, GenerationOptions, "with --verify: ")
    add_dtype(p, GenerationOptions, "with --verify: ")
    add_columns_argument(p)


def options_from(args: argparse.Namespace) -> tuple[PruneOptions, VerifyOptions | None]:
    """The prune and (with --verify) verification options the flags describe."""
    options = build(PruneOptions, threshold_mode=args.threshold_mode, tau=args.tau,
                    quantile=args.quantile, strategy=args.strategy, masking=args.masking,
                    seed=args.seed)
    if args.scores is None and options.masking != "planted":
        raise LeafError("--scores is required (only --masking planted works without it)")
    if args.verify and not (args.teacher and args.student):
        raise LeafError("--verify needs --teacher and --student")
    if not args.verify and (args.teacher or args.student):
        raise LeafError("--teacher/--student are only used with --verify; add --verify")
    if not args.verify:
        return options, None
    generation = build(GenerationOptions, batch_size=args.batch_size,
                       max_new_tokens=args.max_new_tokens, device=args.device, dtype=args.dtype)
    verify = build(VerifyOptions, {"chunk": "--verify-chunk"}, teacher=args.teacher,
                   student=args.student, generation=generation, chunk=args.verify_chunk,
                   skip_signal=args.skip_signal)
    return options, verify


def run(args: argparse.Namespace) -> int:
    from leaf.stages import prune  # heavy: numpy

    options, verify = options_from(args)
    print(prune(data_source(args.data, args), args.scores, args.out, options, verify), file=sys.stderr)
    return 0
