"""Masking rules: the gradient rule and the paper's two baselines (paper section 6.2.1).

- ``gradient``: LeaF's rule, ``norm(d_i) <= t`` (:func:`leaf.detect.spans.confounders`).
- ``random``: as many units as the gradient rule flags for that scored text, drawn uniformly
  from its non-blank units. The generator is seeded from ``(seed, id, level, segment)`` with a
  hash, so a draw does not depend on file order or on which other samples are processed.
- ``ppl``: as many units as the gradient rule flags, taking those with the highest student
  negative log-likelihood (``student_nll``: the most surprising to the student); ties go to
  the earlier unit.

Whatever the rule, the flagged units then go through the same span and pruning logic. (The
testbed oracle, ``planted``, needs no scores: :func:`leaf.detect.counterfactuals.planted_rows`.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

BASELINES = ("random", "ppl")


def unit_rng(seed: int, *key: object) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``key`` (stable across runs and processes)."""
    digest = hashlib.sha256(repr((int(seed), *map(str, key))).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def random_mask(blank: Sequence[bool], n: int, rng: np.random.Generator) -> list[bool]:
    """Flag ``n`` units chosen uniformly among the non-blank ones (fewer if there are fewer)."""
    pool = [i for i, b in enumerate(blank) if not b]
    chosen = rng.choice(len(pool), size=min(n, len(pool)), replace=False) if pool else []
    flags = [False] * len(blank)
    for j in chosen:
        flags[pool[int(j)]] = True
    return flags


def ppl_mask(nll: Sequence[float], blank: Sequence[bool], n: int) -> list[bool]:
    """Flag the ``n`` non-blank units with the highest student NLL (earlier unit wins a tie)."""
    pool = [i for i, b in enumerate(blank) if not b]
    pool.sort(key=lambda i: (-float(nll[i]), i))
    flags = [False] * len(blank)
    for i in pool[:n]:
        flags[i] = True
    return flags


def baseline_mask(
    row: dict, blank: Sequence[bool], n: int, *, masking: str, seed: int = 0
) -> list[bool]:
    """Flags for one scores row under a baseline ``masking``, ``n`` units (never blank ones).

    ``n`` is the number of units the gradient rule flags for the same text, so that a
    baseline differs from LeaF only in *which* units it masks. ``row`` needs ``id``,
    ``level``, ``segment`` (the ``random`` seed) and ``student_nll`` for ``ppl``.
    """
    if masking == "random":
        rng = unit_rng(seed, row["id"], row["level"], row.get("segment", 0))
        return random_mask(blank, n, rng)
    if masking == "ppl":
        return ppl_mask(row["student_nll"], blank, n)
    raise ValueError(f"baseline masking must be one of {BASELINES}, got {masking!r}")
