"""Synthetic screened / scores / counterfactual rows in the agreed formats (not model output).

For tests and for previewing the report at scale (``scripts/screenshot_report.sh``): each sample
has a planted "hint" sentence on which the fake student's saliency is high and the fake
teacher's low, so the normalised difference is low there and span pruning cuts it out; the
counterfactual rows are made by ``leaf prune``'s own code from those scores. Texts include HTML-like and script-ending
strings on purpose.

    python -m leaf.report.synthetic OUT_DIR [N]
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from leaf.data.jsonl import write_jsonl_atomic
from leaf.detect.counterfactuals import PruneOptions, counterfactuals_for_row, original_row
from leaf.detect.thresholds import minmax, normalised_difference

_UNIT = re.compile(r"\s*\S+")
NASTY = ["</script><script>alert(1)</script>", "<b>bold?</b> & &amp; \"quotes\" 'x'",
         "<!-- comment -->", "naïve café — ∑ 😀", "\u2028line\u2029sep"]


def _units(text: str) -> list[list[int]]:
    return [[m.start(), m.end()] for m in _UNIT.finditer(text)]


def _score(rng: np.random.Generator, units: list[list[int]], hot: tuple[int, int]):
    """Raw saliencies: the student leans on ``hot`` (a char range), the teacher does not."""
    inside = np.array([s < hot[1] and e > hot[0] for s, e in units])
    teacher = rng.gamma(2.0, 1.0, len(units)) * np.where(inside, 0.3, 1.0)
    student = rng.gamma(2.0, 1.0, len(units)) * np.where(inside, 3.0, 1.0)
    return teacher, student


def make_rows(n: int = 50, seed: int = 0, tau: float = 0.10) -> dict[str, list[dict[str, Any]]]:
    """``{"screened": [...], "scores": [...], "counterfactuals": [...]}`` for ``n`` samples."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    opts = PruneOptions(tau=tau)
    screened, scores, cfs = [], [], []
    for i in range(n):
        a, b = pick.randint(2, 60), pick.randint(2, 60)
        hint = f"A hint: some say the answer is {a + b + pick.randint(1, 9)}."
        extra = pick.choice(NASTY) if i % 7 == 0 else ""
        instruction = (f"Sam has {a} apples and buys {b} more. {hint} {extra} "
                       f"How many apples does Sam have now?").replace("  ", " ")
        response = (f"Sam starts with {a} apples.\nHe buys {b} more, so {a} + {b} = {a + b}.\n"
                    f"The answer is {a + b}.")
        tc, sc = pick.random() < 0.9, pick.random() < 0.3
        sid = f"syn-{i:05d}"
        sample = {"id": sid, "task": "math", "instruction": instruction, "response": response,
                  "answer": str(a + b)}
        screened.append({**sample, "teacher_response": response,
                         "student_response": f"The answer is {a + b + 3}.",
                         "teacher_correct": tc, "student_correct": sc})
        cfs.append(original_row(sample))
        if not (tc and not sc) and i % 5:
            continue
        h0 = instruction.index(hint)
        views = [("instruction", 0, None, instruction, (h0, h0 + len(hint)))]
        pe = response.index("\nThe answer")
        views.append(("response", 1, pe, response[:pe], (0, response.index(" apples"))))
        for level, seg, prefix_end, text, hot in views:
            units = _units(text)
            t_raw, s_raw = _score(rng, units, hot)
            diff = normalised_difference(t_raw, s_raw)
            scores.append({"id": sid, "level": level, "segment": seg, "field": level,
                           "prefix_end": prefix_end, "units": units,
                           "teacher": minmax(t_raw).round(4).tolist(),
                           "student": minmax(s_raw).round(4).tolist(),
                           "diff": diff.round(4).tolist(), "teacher_raw": t_raw.round(4).tolist(),
                           "student_raw": s_raw.round(4).tolist(),
                           "student_nll": rng.gamma(2.0, 1.0, len(units)).round(3).tolist(),
                           "unit_kind": "word"})
            # the rows leaf prune would write (same rule, spans and cuts), with a made-up check
            for row in counterfactuals_for_row(sample, scores[-1], opts):
                cfs.append({**row, "verified": pick.choice([True, True, False, None])})
    return {"screened": screened, "scores": scores, "counterfactuals": cfs}


def write_run(out_dir: str | Path, n: int = 50, seed: int = 0) -> Path:
    """Write screened.jsonl, scores.jsonl and counterfactuals.jsonl to ``out_dir``."""
    out = Path(out_dir)
    for name, rows in make_rows(n, seed).items():
        write_jsonl_atomic(out / f"{name}.jsonl", rows)
    return out


if __name__ == "__main__":
    write_run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 50)
