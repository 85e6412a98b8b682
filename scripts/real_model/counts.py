"""The counts `scripts/real_model_check.sh` prints after each stage (one line, indented).

    python scripts/real_model/counts.py KIND FILE
KIND: screened | scores | counterfactuals | trainer_state | metrics | attention
"""

from __future__ import annotations

import json
import sys


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(kind: str, path: str) -> str:
    if kind == "screened":
        r = _rows(path)
        t = sum(x["teacher_correct"] for x in r)
        s = sum(x["student_correct"] for x in r)
        w = sum(x["teacher_correct"] and not x["student_correct"] for x in r)
        return (f"teacher accuracy {t}/{len(r)}, student accuracy {s}/{len(r)}, "
                f"teacher right and student wrong {w}")
    if kind == "scores":
        r = _rows(path)
        return (f"scored texts {len(r)}, units {sum(len(x['units']) for x in r)}, "
                f"skip_last {sorted({x.get('skip_last', 0) for x in r})}")
    if kind == "counterfactuals":
        rows = _rows(path)
        originals = {x["id"]: x["instruction"] for x in rows if x["kind"] == "original"}
        c = [x for x in rows if x["kind"] == "counterfactual"]
        v = sum(x["verified"] is True for x in c)
        removed = [repr((originals[x["origin_id"]] if x["level"] == "instruction"
                         else x["response"])[s:e]) for x in c for s, e in x["pruned"]]
        return (f"counterfactuals {len(c)} from {len({x['origin_id'] for x in c})} samples, "
                f"verified {v}; removed: {', '.join(removed) or '-'}")
    if kind == "trainer_state":
        with open(path, encoding="utf-8") as f:
            hist = json.load(f)["log_history"]
        return "; ".join(
            f"step {h['step']}: loss {h['loss']:.3f} (kd {h.get('loss_kd', float('nan')):.3f}, "
            f"cd {h.get('loss_cd', float('nan')):.3f})" for h in hist if "loss" in h)
    if kind == "metrics":
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
        return ", ".join(f"{k} {v}" for k, v in m.items() if k in ("n", "pass@1", "accuracy"))
    if kind == "attention":
        with open(path, encoding="utf-8") as f:
            a = json.load(f)
        rs = a if isinstance(a, list) else a.get("results") or a.get("models") or [a]
        return "; ".join(
            f"{r.get('label')}: {r.get('n_items')} items, attention on pruned spans "
            f"{100 * r.get('mean', float('nan')):.2f}% (uniform {100 * r.get('uniform', float('nan')):.2f}%)"
            for r in rs)
    raise SystemExit(f"unknown kind {kind!r}")


if __name__ == "__main__":
    print("  " + main(sys.argv[1], sys.argv[2]))
