"""Measure the position effect in a scores file: how much of what detection flags is the end of
the scored text (the instruction's last token, right before the template's end of turn) or its
start (right after the template's user header).

    python scripts/real_model/position_effect.py SCORES.jsonl SAMPLES.jsonl [--skips 0,1,2,3,5]

SCORES must be written with ``--skip-last 0`` (rows keep the raw saliencies). For every N in
``--skips`` each row's last N units are dropped and teacher, student and diff re-normalised
over the rest from the raw norms -- with token units (teacher and student share a tokenizer)
exactly what ``leaf detect --skip-last N`` writes. The confounder rule of ``leaf prune``
(:func:`leaf.detect.spans.confounders`, fixed tau and the quantile rule) is then applied and
counted. Prints one markdown table per level.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from leaf.detect.scores_file import scored_text  # noqa: E402
from leaf.detect.spans import confounders  # noqa: E402
from leaf.detect.thresholds import minmax, normalised_difference  # noqa: E402


def drop_tail(row: dict, n: int) -> dict | None:
    """The row as if its last ``n`` units had never been scored (None when none is left)."""
    if row.get("skip_last", 0):
        raise SystemExit("the scores file must be written with --skip-last 0")
    keep = len(row["units"]) - n
    if keep < 1:
        return None
    t, s = row["teacher_raw"][:keep], row["student_raw"][:keep]
    return {**row, "units": row["units"][:keep], "teacher_raw": t, "student_raw": s,
            "teacher": minmax(t).tolist(), "student": minmax(s).tolist(),
            "diff": normalised_difference(t, s).tolist()}


def _argmax(v):
    return max(range(len(v)), key=lambda i: v[i])


def measure(rows: list[dict], samples: dict[str, dict], n: int, rules: dict) -> dict:
    c = defaultdict(float)
    for row in rows:
        r = drop_tail(row, n)
        if r is None:
            continue
        text = scored_text(samples[r["id"]], r)
        last = len(r["units"]) - 1
        c["rows"] += 1
        c["units"] += len(r["units"])
        c["student_peak_last"] += _argmax(r["student_raw"]) == last
        c["teacher_peak_last"] += _argmax(r["teacher_raw"]) == last
        for name, (mode, tau, q) in rules.items():
            found = confounders(text, r["units"], r["diff"], mode, tau, q)
            flagged = [i for i, f in enumerate(found.flags) if f]
            c[f"{name}:flagged"] += len(flagged)
            c[f"{name}:flag_last"] += last in flagged
            c[f"{name}:flag_first"] += 0 in flagged
            c[f"{name}:spans"] += len(found.spans)
            c[f"{name}:span_only_last"] += sum(
                tuple(sp) == tuple(r["units"][last]) for sp in found.spans)
            c[f"{name}:rows_flagging"] += bool(flagged)
    return c


def pct(a: float, b: float) -> str:
    return f"{100 * a / b:.0f}% ({int(a)}/{int(b)})" if b else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores")
    parser.add_argument("samples")
    parser.add_argument("--skips", default="0,1,2,3,5")
    parser.add_argument("--tau", type=float, default=0.10)
    args = parser.parse_args()
    samples = {}
    for line in Path(args.samples).read_text(encoding="utf-8").splitlines():
        if line.strip():
            s = json.loads(line)
            samples[s["id"]] = s
    rows = [json.loads(x) for x in Path(args.scores).read_text(encoding="utf-8").splitlines()
            if x.strip()]
    rules = {f"tau {args.tau:.2f}": ("fixed", args.tau, 0.05), "quantile 0.05": ("quantile",
                                                                               args.tau, 0.05)}
    skips = [int(x) for x in args.skips.split(",")]
    for level in ("instruction", "response"):
        lrows = [r for r in rows if r["level"] == level]
        if not lrows:
            continue
        print(f"\n{level} level: {len(lrows)} scored texts "
              f"({'tokens' if lrows[0]['unit_kind'] == 'token' else 'words'} as units)\n")
        head = ["last N units not scored", "units/text", "student peak on last unit",
                "teacher peak on last unit"]
        for name in rules:
            head += [f"{name}: flagged units", f"{name}: texts with the last unit flagged",
                     f"{name}: texts with the first unit flagged",
                     f"{name}: spans that are only the last unit"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for n in skips:
            c = measure(lrows, samples, n, rules)
            cells = [str(n), f"{c['units'] / max(c['rows'], 1):.1f}",
                     pct(c["student_peak_last"], c["rows"]), pct(c["teacher_peak_last"], c["rows"])]
            for name in rules:
                cells += [str(int(c[f"{name}:flagged"])), pct(c[f"{name}:flag_last"], c["rows"]),
                          pct(c[f"{name}:flag_first"], c["rows"]),
                          pct(c[f"{name}:span_only_last"], c[f"{name}:spans"])]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
