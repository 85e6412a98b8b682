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
- Study 2 (pre-registered; a student that never saw the pruned form; 5 seeds x 1000 items):
  - verification is where the signal goes: LeaF's counterfactuals carry as much KL(teacher ||
    student) as their originals (8.8 vs 9.3 nats per row); the verified ones 2.3 vs 8.1;
  - verified LeaF beat KD on one anti-correlated split only, two distractors: +0.010 [+0.003,
    +0.016]; it tied KD on the others (and gained +0.026 on the shift regime's clean split);
  - the same counterfactuals unverified: +0.021 [+0.013, +0.029] on the anti-correlated
    split, +0.048 [+0.025, +0.069] with two distractors;
  - removing the planted number from every row (oracle): +0.12 to +0.15 on the anti-correlated,
    two-distractor and in-topic splits, but nothing with the distractor moved after the
    question.
- `leaf demo` runs a small version of study 2's distractor-shift regime (4000 rows, 3 epochs,
  3 seeds): there only the unverified counterfactuals beat KD (+0.017 on the anti-correlated
  split); the oracle's gain did not show at that size (the study trained on 16000 rows for 6
  epochs). `--family digit_sum` runs the old demo.
- Pending: the 3% and 15% doses."""


def findings_text() -> str:
    """The title and the findings, as printed."""
    return f"## {TITLE}\n\n{FINDINGS}\n"
