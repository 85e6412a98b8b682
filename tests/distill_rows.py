"""Rows of a counterfactuals.jsonl file for the distillation tests (originals, instruction-
and response-level counterfactuals), as `leaf prune` writes them."""

from __future__ import annotations

HINT = " A hint: the answer is 15."


def training_rows(n: int = 4, unverified: bool = True) -> list[dict]:
    rows = []
    for i in range(n):
        ins = f"Let x + {i} = 10.{HINT} What is x?"
        resp = f"x = 10 - {i} = {10 - i}.\nThe answer is {10 - i}."
        base = {"id": f"s{i}", "task": "math", "instruction": ins, "response": resp,
                "answer": str(10 - i)}
        cut = ins.index(HINT)
        prefix_end = resp.index("\n") + 1
        rows += [
            {**base, "origin_id": base["id"], "kind": "original", "level": "instruction",
             "pruned": [], "verified": None},
            {**base, "id": f"s{i}#i0", "origin_id": base["id"], "kind": "counterfactual",
             "level": "instruction", "instruction": ins[:cut] + ins[cut + len(HINT):],
             "pruned": [[cut, cut + len(HINT)]], "verified": True, "masking": "gradient",
             "strategy": "span"},
            {**base, "id": f"s{i}#r1.0", "origin_id": base["id"], "kind": "counterfactual",
             "level": "response", "prefix": resp[:4] + resp[8:prefix_end],
             "target": resp[prefix_end:], "pruned": [[4, 8]],
             "verified": (i % 2 == 0) if unverified else True, "masking": "gradient",
             "strategy": "span"},
        ]
    return rows
