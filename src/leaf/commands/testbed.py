"""``leaf testbed``: write the planted-confounder splits of a testbed family to JSONL."""

from __future__ import annotations

import argparse

from leaf.errors import LeafError

NAME = "testbed"
HELP = ("write the planted-confounder testbed splits (train, test_id, test_anti, test_clean; "
        "distractor-shift splits with --shift-size)")
DESCRIPTION = """\
Generate a synthetic task family whose distractor spans are known and write one JSONL file per
split into --out: train.jsonl (the distillation data; the distractor agrees with the answer with
probability --bias), test_id.jsonl (same distribution), test_anti.jsonl (the distractor always
points to a wrong answer) and test_clean.jsonl (no distractor). Each row is a math sample (id,
task, instruction, response, answer) plus family, split, variant, distractor_value,
distractor_agrees and planted = {"misleading": [[s, e]], "distractor": [[s, e]]}, character
spans of the instruction. The same --family/--seed/--bias always gives the same files.
With --shift-size N it also writes the distractor-shift splits the family can express, N
samples each, always with wrong values: test_anti_moved.jsonl (the distractor at a position the
other splits never use), test_anti_two.jsonl (two distractor sentences) and
test_anti_topic.jsonl (a distractor about the question's own item); their rows also carry
layout and distractor_values. They do not change the other files.
The shipped checkpoints of each family (teacher, student and any extra roles, such as
word_problem's teacher_varied) are listed with --list.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leaf.testbed.tasks import DEFAULT_SIZES, FAMILIES  # heavy: numpy

    parser.add_argument("--family", choices=sorted(FAMILIES), default="digit_sum",
                        help="task family (default digit_sum)")
    parser.add_argument("--out", help="output directory (required unless --list)")
    parser.add_argument("--seed", type=int, default=0,
                        help="generation seed: the same seed gives the same files (default 0)")
    parser.add_argument("--bias", type=float, default=0.95,
                        help="P(distractor = answer) in train and test_id (default 0.95)")
    parser.add_argument("--train-size", type=int, default=DEFAULT_SIZES["train"],
                        help=f"samples in train.jsonl (default {DEFAULT_SIZES['train']})")
    parser.add_argument("--test-size", type=int, default=DEFAULT_SIZES["test_id"],
                        help=f"samples in each test split (default {DEFAULT_SIZES['test_id']})")
    parser.add_argument("--shift-size", type=int, default=0,
                        help="samples in each distractor-shift split the family can express "
                             "(test_anti_moved, test_anti_two, test_anti_topic; default 0: none)")
    parser.add_argument("--list", action="store_true",
                        help="print the shipped checkpoints per family (extra roles included) "
                             "and exit")


def run(args: argparse.Namespace) -> int:
    from leaf.testbed.assets import ROLES, extra_roles, families_shipped, model_dir  # heavy
    from leaf.testbed.tasks import FAMILIES, SHIFT_SPLITS, write_splits  # heavy: numpy

    if args.list:
        for family in families_shipped():
            for role in (*ROLES, *extra_roles(family)):
                print(f"{family}\t{role}\t{model_dir(family, role)}")
        return 0
    if not args.out:
        raise LeafError("--out is required (the directory to write the splits into)")
    if not 0.0 <= args.bias <= 1.0:
        raise LeafError(f"--bias must be in [0, 1], got {args.bias}")
    if args.shift_size < 0:
        raise LeafError(f"--shift-size must be >= 0, got {args.shift_size}")
    sizes = {"train": args.train_size, "test_id": args.test_size, "test_anti": args.test_size,
             "test_clean": args.test_size}
    sizes |= {split: args.shift_size for split, layout in SHIFT_SPLITS.items()
              if layout in FAMILIES[args.family].layouts}
    for split, path in write_splits(args.out, args.family, args.seed, args.bias, sizes).items():
        print(f"{split}\t{sizes[split]}\t{path}")
    return 0
