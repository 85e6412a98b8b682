"""Greedy accuracy of shipped testbed checkpoints on the distractor-shift splits.

The held-out splits of ``scripts/train_testbed.py`` (its ``EVAL`` seed, bias and size) plus the
shift splits of :mod:`leaf.testbed.tasks` (``SHIFT_SPLITS``: the distractor moved, two
distractors, an in-topic one), for each role named: how far a checkpoint pre-trained on one
distractor layout carries to layouts it never saw (docs/testbed.md reports the numbers).

    python scripts/measure_shift_splits.py --family word_problem --roles teacher student teacher_varied
"""

from __future__ import annotations

import argparse
import json

import torch

from leaf.testbed.assets import load
from leaf.testbed.evaluate import greedy_accuracy
from leaf.testbed.tasks import FAMILIES, SHIFT_SPLITS, SPLITS, get_family, make_split

EVAL = dict(seed=1000, bias=0.95, n=200)  # scripts/train_testbed.py's held-out splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True)
    parser.add_argument("--roles", nargs="+", default=["teacher", "student"])
    parser.add_argument("--n", type=int, default=EVAL["n"], help="samples per split")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fam = get_family(args.family)
    splits = [s for s in SPLITS if s != "train"]
    splits += [s for s, layout in SHIFT_SPLITS.items() if layout in fam.layouts]
    rows = {s: make_split(args.family, s, args.n, EVAL["seed"], EVAL["bias"]) for s in splits}
    table = {}
    for role in args.roles:
        model, tokenizer = load(args.family, role)
        table[role] = {s: greedy_accuracy(model, tokenizer, r)["accuracy"] for s, r in rows.items()}
        print(f"{args.family}/{role}: " + ", ".join(f"{s} {a:.3f}" for s, a in table[role].items()),
              flush=True)
    print(json.dumps({"family": args.family, "eval": EVAL | {"n": args.n}, "accuracy": table}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
