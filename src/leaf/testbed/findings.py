"""What the testbed studies have shown, in a few plain lines: ``leaf demo`` prints them first and
README.md's first screen carries the same text (a test keeps the two equal). The numbers behind
every sentence are in docs/RESULTS.md; change this text only when that page changes."""

from __future__ import annotations

TITLE = "What the testbed has shown so far (docs/RESULTS.md)"

FINDINGS = """\
- Detection works: teacher-vs-student gradients find the planted confounder (span recall
  0.46-0.69; PPL or random masking at most 0.13).
- Study 1: where the confounder misleads, LeaF never beat plain KD (9 cells), nor did removing
  exactly the planted number: the counterfactuals verification kept carried little signal.
- Study 2 (pre-registered; students that saw the pruned form in 0, 3 or 15% of their
  pre-training; 5 seeds x 1000 items per split; gains below are on anti-correlated splits):
  - verification removes the signal: unverified, LeaF's counterfactuals carry as much
    KL(teacher || student) as their originals (8.8 vs 9.3 nats per row at 0%); verified, 0.6-2.3
    vs 5.5-8.1;
  - verified LeaF: +0.002 [-0.003, +0.008] at 0%, +0.010 and +0.006 (intervals above 0) at 3%
    and 15%, +0.010 with two distractors; the predicted larger gain at 0% was contradicted, and
    extra copies of the hard originals gained more (+0.014 to +0.037);
  - the same counterfactuals unverified: +0.021, +0.035, +0.005 by dose, +0.048 with two
    distractors;
  - removing the planted number from every row (oracle): +0.06 to +0.15, except with the
    distractor moved after the question (nothing).
- `leaf demo` runs a small version of study 2's distractor-shift regime (4000 rows, 3 epochs,
  3 seeds): there only the unverified counterfactuals beat KD (+0.017 on the anti-correlated
  split); the oracle's gain did not show at that size (the study trained on 16000 rows for 6
  epochs). `--family digit_sum` runs the old demo."""


def findings_text() -> str:
    """The title and the findings, as printed."""
    return f"## {TITLE}\n\n{FINDINGS}\n"
