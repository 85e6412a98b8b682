"""The cut-off that flags a confounder: the normalised teacher-student saliency difference
(paper eq. 3) and the thresholds on it (eq. 4, with tau and the other rules' defaults).

For one sample and model M, ``gh_i(M) = (g_i - min g) / (max g - min g)`` (min-max over the
scored units; all-equal scores give all zeros). The difference ``d_i = gh_i(T) - gh_i(S)`` is
min-max normalised the same way, and unit i is a candidate confounder when
``norm(d_i) <= tau``: the student leans on it, the teacher does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THRESHOLD_MODES = ("fixed", "quantile", "iqr")
DEFAULT_TAU = 0.10
DEFAULT_QUANTILE = 0.05
QUANTILE_CAP = 0.5


def minmax(values: Sequence[float]) -> np.ndarray:
    """``(v - min v) / (max v - min v)``; an all-equal (or empty) input maps to zeros."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        return np.zeros_like(v)
    return (v - lo) / (hi - lo)


def normalised_difference(teacher: Sequence[float], student: Sequence[float]) -> np.ndarray:
    """``minmax(minmax(g_T) - minmax(g_S))``: low values mark student-only sensitivity."""
    return minmax(minmax(teacher) - minmax(student))


def threshold(
    diff: Sequence[float],
    mode: str = "fixed",
    tau: float = DEFAULT_TAU,
    quantile: float = DEFAULT_QUANTILE,
) -> float:
    """The cut-off t; a unit is a candidate confounder when ``diff <= t``.

    - ``fixed``: the paper's tau (0.10 by default).
    - ``quantile``: the released code's rule, the value at position ``int(q * n)`` of the
      ascending sorted differences, capped at 0.5.
    - ``iqr``: ``Q1 - 1.5 * IQR`` of the differences (an outlier rule from a secondary summary
      of the paper; an option, never the default).
    """
    d = np.sort(np.asarray(diff, dtype=np.float64))
    if d.size == 0:
        return float("-inf")
    if mode == "fixed":
        return float(tau)
    if mode == "quantile":
        if not 0.0 <= quantile < 1.0:
            raise ValueError(f"quantile must be in [0, 1), got {quantile}")
        return float(min(d[int(quantile * d.size)], QUANTILE_CAP))
    if mode == "iqr":
        q1, q3 = np.percentile(d, [25, 75])
        return float(q1 - 1.5 * (q3 - q1))
    raise ValueError(f"threshold mode must be one of {THRESHOLD_MODES}, got {mode!r}")
