#!/usr/bin/env python
"""The second study's pilot decision (docs/study2.md, "Pilot"), read off the pilot runs.

    python scripts/study2_pilot.py OUT     # OUT/pilot-nl00, pilot-nl03, pilot-nl15 -> OUT/pilot/

Applies the three rules written in docs/study2.md before the pilot ran, to training-data figures
only (no test split is read):

1. training rows: 8000 if every dose keeps at least 60 verified gradient counterfactuals, else
   16000;
2. budget: KD converged when the mean logged training loss of its third epoch is within 5% of
   its second's: 3 epochs, else 6;
3. the signal check: the kept/original KL ratio per row of the verified gradient set at dose 0%
   reaches 0.5.

Writes ``OUT/pilot/decision.json`` (what scripts/run_study2.sh passes to R1 and R2) and
``OUT/pilot/pilot.md`` (the figures: kept counts, the counterfactual signal of every set per
dose, KD's loss curve).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from leaf.data.jsonl import write_json_atomic  # noqa: E402

DOSES = {"nl00": "0%", "nl03": "3%", "nl15": "15%"}
GRADIENT_SET = "grad_t10"
MIN_KEPT, ROWS, MORE_ROWS = 60, 8000, 16000
CONVERGED_WITHIN, EPOCHS, MORE_EPOCHS = 0.05, 3, 6
SIGNAL_CHECK = 0.5


def kd_curve(run: Path) -> list[dict]:
    """KD's logged training losses (step, epoch, loss) of the pilot's one replicate."""
    [state] = run.glob("distill/kd/seed*/model/trainer_state.json")
    history = json.loads(state.read_text())["log_history"]
    return [{"step": h["step"], "epoch": h["epoch"], "loss": h["loss"]}
            for h in history if "loss" in h]


def epoch_means(curve: list[dict]) -> dict[int, float]:
    """Mean logged loss per epoch (a log at epoch 1.3 belongs to the second epoch)."""
    groups: dict[int, list[float]] = {}
    for point in curve:
        groups.setdefault(max(1, math.ceil(point["epoch"])), []).append(point["loss"])
    return {e: sum(v) / len(v) for e, v in sorted(groups.items())}


def dose_figures(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text())
    [(dkey, counts)] = results["counts"].items()
    sets = {name: {"kept": c.get("kept"), "counterfactuals": c.get("counterfactuals"),
                   "signal": c.get("signal")}
            for name, c in counts["sets"].items()}
    curve = kd_curve(run)
    return {"run": run.name, "train": counts["train"],
            "teacher_right_student_wrong": counts.get("teacher_right_student_wrong"),
            "sets": sets, "kd_curve": curve, "kd_epoch_means": epoch_means(curve)}


def third_vs_second(means: dict[int, float]) -> float | None:
    """How much lower KD's mean logged loss was in its third epoch than in its second
    (a share of the second's)."""
    return (means[2] - means[3]) / means[2] if {2, 3} <= set(means) and means[2] else None


def decide(figures: dict[str, dict]) -> dict:
    kept = {d: f["sets"][GRADIENT_SET]["kept"] or 0 for d, f in figures.items()}
    rows = ROWS if min(kept.values()) >= MIN_KEPT else MORE_ROWS
    drop = third_vs_second(figures["nl00"]["kd_epoch_means"])
    converged = {d: None if (x := third_vs_second(f["kd_epoch_means"])) is None
                 else abs(x) <= CONVERGED_WITHIN for d, f in figures.items()}
    epochs = EPOCHS if all(converged.values()) else MORE_EPOCHS
    signal = figures["nl00"]["sets"][GRADIENT_SET]["signal"] or {}
    ratio = signal.get("ratio_row")
    return {"train_rows": rows, "epochs": epochs, "kept_gradient": kept,
            "kd_converged": converged, "kd_third_epoch_drop_nl00": drop,
            "signal_ratio": ratio,
            "signal_check_passed": ratio is not None and ratio >= SIGNAL_CHECK,
            "rules": {"min_kept": MIN_KEPT, "rows": [ROWS, MORE_ROWS],
                      "converged_within": CONVERGED_WITHIN, "epochs": [EPOCHS, MORE_EPOCHS],
                      "signal_check": SIGNAL_CHECK}}


def fmt(x, digits=3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def report(figures: dict[str, dict], decision: dict) -> str:
    lines = ["# The second study's pilot (docs/study2.md, \"Pilot\")", "",
             "One replicate per dose on data seed 900 (not the study's data), 8000 training rows "
             "at bias 0.95; only training-data figures are read.", "",
             "## Counterfactual signal per dose (pre-KD student)", "",
             "| dose | set | kept | KL per row, kept counterfactuals | KL per row, their "
             "originals | ratio | KL per token, counterfactuals | KL per token, originals |",
             "|---|---|---|---|---|---|---|---|"]
    for d, f in figures.items():
        for name, s in f["sets"].items():
            sig = s["signal"] or {}
            lines.append(f"| {DOSES[d]} | {name} | {s['kept']} | {fmt(sig.get('cf_kl_row'))} | "
                         f"{fmt(sig.get('orig_kl_row'))} | {fmt(sig.get('ratio_row'))} | "
                         f"{fmt(sig.get('cf_kl_token'))} | {fmt(sig.get('orig_kl_token'))} |")
    lines += ["", "Screened rows (teacher right, student wrong): " + ", ".join(
        f"{DOSES[d]} {f['teacher_right_student_wrong']} of {f['train']}" for d, f in
        figures.items()) + ".", "", "## KD's training loss (mean of the logged losses per epoch)",
        "", "| dose | " + " | ".join(f"epoch {e}" for e in (1, 2, 3)) + " | third vs second |",
        "|---|---|---|---|---|"]
    for d, f in figures.items():
        m = f["kd_epoch_means"]
        change = None if (drop := third_vs_second(m)) is None else -drop
        lines.append(f"| {DOSES[d]} | " + " | ".join(fmt(m.get(e), 4) for e in (1, 2, 3))
                     + f" | {'-' if change is None else f'{change:+.1%}'} |")
    lines += ["", "Every logged point (step: loss), dose 0%: " + ", ".join(
        f"{p['step']}: {p['loss']:.4f}" for p in figures["nl00"]["kd_curve"]) + ".", "",
        "## Decisions (rules of docs/study2.md)", "",
        f"- training rows: **{decision['train_rows']}** (kept verified gradient counterfactuals "
        f"per dose: {', '.join(f'{DOSES[d]} {k}' for d, k in decision['kept_gradient'].items())};"
        f" rule: {MIN_KEPT} at every dose for {ROWS}, else {MORE_ROWS})",
        f"- epochs: **{decision['epochs']}** (KD converged by the rule at every dose: "
        f"{all(decision['kd_converged'].values())})",
        f"- signal check at dose 0%: ratio {fmt(decision['signal_ratio'])} against "
        f"{SIGNAL_CHECK}: **{'passed' if decision['signal_check_passed'] else 'failed'}**"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    missing = [d for d in DOSES if not (args.out / f"pilot-{d}" / "results.json").is_file()]
    if missing:
        print(f"study2_pilot: no finished pilot run for {missing} under {args.out}",
              file=sys.stderr)
        return 1
    figures = {d: dose_figures(args.out / f"pilot-{d}") for d in DOSES}
    decision = decide(figures)
    (args.out / "pilot").mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "pilot" / "decision.json", decision | {"figures": figures})
    (args.out / "pilot" / "pilot.md").write_text(report(figures, decision), encoding="utf-8")
    print(report(figures, decision))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
