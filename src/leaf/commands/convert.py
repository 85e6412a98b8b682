"""leaf convert: turn a public benchmark file into leaf's bench JSONL."""

from __future__ import annotations

import argparse

from leaf.data.jsonl import write_jsonl_atomic
from leaf.evaluate.converters import CONVERTERS, convert

NAME = "convert"
HELP = "convert a public benchmark file (GSM8K, MATH-500, HumanEval, ...) to bench JSONL"
DESCRIPTION = """\
Reads a local copy of a benchmark in its published format (.jsonl, .json or .parquet,
optionally .gz) and writes bench JSONL: id, task, instruction, response (reference solution or
""), answer (math, qa: a list of accepted answers) or tests + entry_point (code), plus a few
source fields. Nothing is downloaded. Formats and the fields read are listed in
docs/evaluation.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=list(CONVERTERS),
                        help="the dataset's public format")
    parser.add_argument("--input", required=True, help="local dataset file")
    parser.add_argument("--out", required=True, help="bench JSONL to write")
    parser.add_argument("--closed-book", action="store_true",
                        help="qa: leave the passages out of the instruction")
    parser.add_argument("--limit", type=int, default=None, help="convert the first N records")


def run(args: argparse.Namespace) -> int:

    rows, skipped = convert(args.format, args.input, closed_book=args.closed_book,
                            limit=args.limit)
    write_jsonl_atomic(args.out, rows)
    note = f" (skipped {skipped} records with images)" if skipped else ""
    print(f"wrote {len(rows)} {args.format} problems to {args.out}{note}")
    return 0
