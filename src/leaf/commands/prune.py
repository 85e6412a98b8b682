"""``leaf prune``: scores + samples -> counterfactual samples (LeaF stage 1, steps 4-7)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from leaf.detect.baselines import MASKINGS
from leaf.detect.scoring import DEFAULT_QUANTILE, DEFAULT_TAU, THRESHOLD_MODES
from leaf.detect.spans import STRATEGIES
from leaf.errors import LeafError

NAME = "prune"
HELP = "turn confounder scores into counterfactual samples (span or collective pruning)"
DESCRIPTION = """\
Reads the samples (--data, JSONL) and the per-unit scores written by `leaf detect`
(--scores), flags candidate confounders (normalised teacher-minus-student saliency
difference <= threshold; whitespace-only units never), groups contiguous candidates into
character spans and removes them: one counterfactual per span (--strategy span, the paper's
choice) or one with every span removed (--strategy collective).

Writes --out (JSONL): for every sample an `original` row (kind, origin_id, level,
pruned=[], verified=null) followed by its `counterfactual` rows (id "<id>#i<j>" for the
instruction, "<id>#r<k>.<j>" for response segment k; `pruned` holds the removed
[start, end) character spans of the original text; response rows carry `prefix` and
`target`). --masking random|ppl replaces the gradient rule by the paper's baselines (same
number of units per text). With --verify, each counterfactual is answered by both models
and `verified` is true or false (rejected rows are kept, with false, so reports can show
them; training must skip them); without it `verified` is null.

Resumable: run the same command again to continue an interrupted run.
See docs/pruning.md for the exact rules, including whitespace at a cut."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="samples JSONL (id, task, instruction, response)")
    p.add_argument("--scores", required=True, help="scores JSONL written by `leaf detect`")
    p.add_argument("--out", required=True, help="counterfactuals JSONL to write")
    p.add_argument("--threshold-mode", choices=THRESHOLD_MODES, default="fixed",
                   help="fixed: the paper's tau; quantile: the released code's rule (value at "
                        "position int(q*n) of the sorted differences, capped at 0.5); iqr: "
                        "Q1 - 1.5 IQR (default: fixed)")
    p.add_argument("--tau", type=float, default=DEFAULT_TAU,
                   help=f"threshold for --threshold-mode fixed (default {DEFAULT_TAU})")
    p.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE,
                   help=f"q for --threshold-mode quantile (default {DEFAULT_QUANTILE})")
    p.add_argument("--strategy", choices=STRATEGIES, default="span",
                   help="span: one counterfactual per span (default); collective: one per text")
    p.add_argument("--masking", choices=MASKINGS, default="gradient",
                   help="gradient: LeaF's rule (default); random / ppl: baselines that mask as "
                        "many units as the gradient rule, at random or by highest student NLL")
    p.add_argument("--seed", type=int, default=0, help="seed of --masking random (default 0)")
    p.add_argument("--verify", action="store_true",
                   help="keep the answer check: both --teacher and --student must answer each "
                        "counterfactual correctly (sets `verified`)")
    p.add_argument("--teacher", help="teacher model dir or hub id (with --verify)")
    p.add_argument("--student", help="student model dir or hub id (with --verify)")
    p.add_argument("--batch-size", type=int, default=8, help="generation batch size (--verify)")
    p.add_argument("--max-new-tokens", type=int, default=512,
                   help="generation length for --verify (default 512)")
    p.add_argument("--verify-chunk", type=int, default=1000,
                   help="samples verified per model load; output is saved after each chunk "
                        "(default 1000; 0 = all at once)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (--verify)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="model dtype for --verify (default float32)")


def _check_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.tau <= 1.0:
        raise LeafError(f"--tau must be in [0, 1] (differences are min-max normalised), "
                        f"got {args.tau}")
    if not 0.0 <= args.quantile < 1.0:
        raise LeafError(f"--quantile must be in [0, 1), got {args.quantile}")
    if args.verify and not (args.teacher and args.student):
        raise LeafError("--verify needs --teacher and --student")
    if not args.verify and (args.teacher or args.student):
        raise LeafError("--teacher/--student are only used with --verify; add --verify")
    if args.batch_size < 1 or args.max_new_tokens < 1 or args.verify_chunk < 0:
        raise LeafError("--batch-size and --max-new-tokens must be >= 1, --verify-chunk >= 0")


def _verify(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Set ``verified`` on the counterfactual rows in place."""
    todo = [r for r in rows if r["kind"] == "counterfactual"]
    if not todo:
        return
    try:
        from leaf.evaluate.verify import verify_counterfactuals
    except ImportError as exc:
        raise LeafError(f"--verify needs leaf.evaluate.verify, which failed to import ({exc})"
                        ) from None
    ok = verify_counterfactuals(
        todo, args.teacher, args.student, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, device=args.device, dtype=args.dtype,
    )
    if len(ok) != len(todo):
        raise LeafError(f"verify_counterfactuals returned {len(ok)} results for {len(todo)} rows")
    for row, good in zip(todo, ok):
        row["verified"] = bool(good)


def _check_resume(done_rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    for r in done_rows:
        if r.get("kind") != "counterfactual":
            continue
        if r.get("masking") != args.masking or r.get("strategy") != args.strategy:
            raise LeafError(
                f"{args.out} already holds rows made with --masking {r.get('masking')} "
                f"--strategy {r.get('strategy')}; delete it (and {args.out}.part) or choose "
                "another --out"
            )
        if (r.get("verified") is None) == bool(args.verify):
            raise LeafError(f"{args.out} was started {'without' if args.verify else 'with'} "
                            "--verify; delete it or choose another --out")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from leaf.data.jsonl import ResumableWriter
    from leaf.data.schema import read_samples
    from leaf.detect.counterfactuals import PruneOptions, sample_rows
    from leaf.detect.scores_io import read_scores

    _check_args(args)
    samples = read_samples(args.data)
    by_id = {s["id"]: s for s in samples}
    scores = read_scores(args.scores, by_id, need_nll=args.masking == "ppl")
    opts = PruneOptions(threshold_mode=args.threshold_mode, tau=args.tau,
                        quantile=args.quantile, strategy=args.strategy,
                        masking=args.masking, seed=args.seed)
    n_cf = n_ok = 0
    part = Path(str(args.out) + ".part")
    had_part = part.exists()
    with ResumableWriter(args.out, key=lambda r: r["origin_id"]) as writer:
        try:
            _check_resume(writer.rows, args)
        except LeafError:
            if not had_part:  # the writer copied a finished output to .part: undo that
                writer.close()
                part.unlink(missing_ok=True)
            raise
        todo = [s for s in samples if s["id"] not in writer.done]
        # without --verify each sample is written as soon as it is built; with it, a chunk of
        # samples shares one model load
        chunk = (args.verify_chunk or max(len(todo), 1)) if args.verify else 1
        bar = tqdm(total=len(todo), desc="prune", unit="sample", disable=None)
        for start in range(0, len(todo), chunk):
            groups = [sample_rows(s, scores.get(s["id"], []), opts)
                      for s in todo[start:start + chunk]]
            if args.verify:
                _verify([r for g in groups for r in g], args)
            for g in groups:
                writer.write(g)
                n_cf += len(g) - 1
                n_ok += sum(r["verified"] is True for r in g)
                bar.update(1)
        bar.close()
    msg = f"leaf prune: {len(todo)} samples, {n_cf} counterfactuals"
    if args.verify:
        msg += f", {n_ok} verified"
    skipped = len(samples) - len(todo)
    if skipped:
        msg += f" ({skipped} samples already done)"
    print(msg + f" -> {args.out}", file=sys.stderr)
    return 0
