"""The shipped testbed models on pruned inputs: the pre-training form against what prune leaves.

For each family, ``--n`` anti-correlated problems (a wrong distractor number), each drawn from
its own seed so the same problem can be rendered twice:

- ``with_number``: the distractor-carrying instruction (the ``test_anti`` form);
- ``numberless``: the numberless row of the same problem, the form the models were pre-trained
  on (``make_sample(..., "numberless", ...)``);
- ``pruned``: the planted number removed from ``with_number`` the way ``leaf prune`` removes a
  span (:func:`leaf.detect.spans.prune_plans`, then :func:`~leaf.detect.spans.remove_spans`).

It prints, per family, how many ``numberless`` and ``pruned`` texts are identical, the
teacher's and student's greedy accuracy on each form
(:func:`leaf.testbed.evaluate.greedy_accuracy`), and how many exact removals of the planted
number survive verification (:func:`leaf.evaluate.verify.verify_counterfactuals`: both models
answer the pruned instruction right).

    PYTHONPATH=src python scripts/measure_pruned_form.py            # the shipped checkpoints
    PYTHONPATH=src python scripts/measure_pruned_form.py --assets OLD/src/leaf/testbed/assets
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from leaf.detect.spans import prune_plans, remove_spans
from leaf.evaluate.verify import verify_counterfactuals
from leaf.testbed.assets import ASSETS_DIR
from leaf.testbed.evaluate import greedy_accuracy
from leaf.testbed.tasks import FAMILIES, make_sample


def problems(family: str, n: int) -> list[dict]:
    """``n`` problems, each ``{"with_number", "numberless", "pruned"}`` sample rows."""
    fam = FAMILIES[family]
    out = []
    for i in range(n):
        seed = f"measure-pruned-form:{family}:{i}"
        full = make_sample(fam, random.Random(seed), "disagree", f"{family}-{i}", "test_anti")
        numberless = make_sample(fam, random.Random(seed), "numberless", f"{family}-{i}",
                                 "test_anti")
        text = full["instruction"]
        [plan] = prune_plans(text, [tuple(s) for s in full["planted"]["misleading"]])
        out.append({"with_number": full, "numberless": numberless,
                    "pruned": full | {"instruction": remove_spans(text, plan)}})
    return out


def measure(family: str, assets: Path, n: int, batch_size: int) -> dict:
    items = problems(family, n)
    forms = ("with_number", "numberless", "pruned")
    result = {"n": n, "identical": sum(p["numberless"]["instruction"] == p["pruned"]["instruction"]
                                       for p in items)}
    for role in ("teacher", "student"):
        path = assets / family / role
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(path)
        result[role] = {f: greedy_accuracy(model, tok, [p[f] for p in items],
                                           batch_size)["accuracy"] for f in forms}
    verified = verify_counterfactuals(
        [p["pruned"] for p in items], str(assets / family / "teacher"),
        str(assets / family / "student"), batch_size=batch_size,
        max_new_tokens=FAMILIES[family].max_new_tokens,
        device="cpu")
    result["verified"] = sum(verified)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", nargs="+", choices=sorted(FAMILIES), default=sorted(FAMILIES))
    parser.add_argument("--assets", type=Path, default=ASSETS_DIR,
                        help="folder holding <family>/{teacher,student}/ (default: shipped)")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for family in args.family:
        start = time.time()
        result = measure(family, args.assets, args.n, args.batch_size)
        result["wall_s"] = round(time.time() - start, 1)
        print(json.dumps({"family": family, **result}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
