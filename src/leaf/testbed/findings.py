"""What the testbed studies have shown, in a few plain lines: ``leaf demo`` prints them first and
README.md's first screen carries the same text (a test keeps the two equal). The numbers behind
every sentence are in docs/RESULTS.md; change this text only when that page changes."""

from __future__ import annotations

TITLE = "What the testbed has shown so far (docs/RESULTS.md)"

FINDINGS = """\
- Detection works: comparing teacher and student gradients finds the planted confounder (span
  recall 0.46-0.69, against at most 0.13 for PPL or random masking).
- Where the confounder misleads (the anti-correlated split), distilling on LeaF's
  counterfactuals did not beat plain KD in any of the first study's 9 cells, and neither did
  removing exactly the planted number. What the counterfactuals changed is accuracy on inputs
  without a confounder (the clean split: up to +0.09 for LeaF, +0.10 for the oracle).
- Why: the counterfactuals that verification keeps carry a small part of their originals'
  distillation signal (KL(teacher || student) per row; the demo's "Counterfactual signal" table
  prints it for your run, and `leaf prune --verify` for your own data).
- A second, pre-registered study (docs/study2.md) builds regimes where they carry more. Its
  pilot shows where the signal goes: before verification the gradient counterfactuals carry as
  much as their originals (9.0 against 9.0 nats per row for the student that never saw the
  pruned form); the 41 of 196 that verification keeps carry 2.3 against 6.0 (0.38, below the
  0.5 the study asked for). Its results go to docs/RESULTS.md, part 2, as its runs finish."""


def findings_text() -> str:
    """The title and the findings, as printed."""
    return f"## {TITLE}\n\n{FINDINGS}\n"
