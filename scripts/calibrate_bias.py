"""Choose the study's `paper` bias: the share of teacher-right/student-wrong training rows per bias.

For each family and bias, screen a testbed *training* split (never a test split) with the shipped
teacher and student and print the share of rows the student gets wrong and the teacher right.
The study's `paper` regime uses the bias whose share is closest to 20% (the paper screened about
7K of 30K samples). Output: one JSON object per line, and a summary line per family.

    python scripts/calibrate_bias.py --families digit_sum word_problem --n 400
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from leaf.data.jsonl import read_jsonl
from leaf.stages import GenerationOptions, screen
from leaf.testbed.assets import resolve_model
from leaf.testbed.tasks import FAMILIES, write_splits

TARGET = 0.20


def screened_share(family: str, bias: float, n: int, seed: int) -> float:
    teacher = resolve_model(f"testbed:{family}/teacher")
    student = resolve_model(f"testbed:{family}/student")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_splits(tmp, family, seed=seed, bias=bias,
                             sizes={"train": n, "test_id": 0, "test_anti": 0, "test_clean": 0})
        out = Path(tmp) / "screened.jsonl"
        screen(teacher, student, paths["train"], out,
               GenerationOptions(batch_size=100, max_new_tokens=40, device="cpu"))
        rows = read_jsonl(out)
    return sum(r["teacher_correct"] and not r["student_correct"] for r in rows) / len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=sorted(FAMILIES))
    ap.add_argument("--biases", nargs="+", type=float,
                    default=[0.95, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    ap.add_argument("--n", type=int, default=400, help="training rows screened per bias")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    for family in args.families:
        shares = {}
        for bias in args.biases:
            shares[bias] = screened_share(family, bias, args.n, args.seed)
            print(json.dumps({"family": family, "bias": bias, "n": args.n,
                              "screened_share": round(shares[bias], 4)}), flush=True)
        best = min(shares, key=lambda b: abs(shares[b] - TARGET))
        print(f"{family}: bias {best} screens {shares[best]:.1%} of training rows "
              f"(target {TARGET:.0%})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
