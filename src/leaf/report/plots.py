"""PNG figures for the report (matplotlib, Agg backend: no display needed).

- :func:`plot_diff_distribution`: histogram of normalised differences ``norm(d_i)`` over all
  scored units, with the confounder threshold tau (units at or left of it are candidates).
- :func:`plot_spans_per_sample`: how many confounder spans each sample got, per level.
- :func:`plot_attention`: share of attention on confounder spans, per layer, one bar per model
  (e.g. pre-distillation vs KD vs LeaF student).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_diff_distribution(
    diffs: Mapping[str, Sequence[float]], path: str | Path, threshold: float | None = None,
    threshold_label: str = "tau",
) -> Path:
    """Histogram of normalised differences per level; a dashed line at the threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bins = np.linspace(0.0, 1.0, 41)
    for i, (level, values) in enumerate(diffs.items()):
        if len(values):
            ax.hist(np.asarray(values, dtype=float), bins=bins, alpha=0.6, label=level,
                    color=COLORS[i % len(COLORS)])
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="#c0392b", linestyle="--", linewidth=1.5,
                   label=f"{threshold_label} = {threshold:.3g}")
    ax.set_xlabel("normalised difference  norm(gT - gS)   (low: student-only focus)")
    ax.set_ylabel("scored units")
    ax.set_title("Teacher-student saliency difference")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False)
    return _save(fig, path)


def plot_spans_per_sample(counts: Mapping[str, Sequence[int]], path: str | Path) -> Path:
    """Grouped bars: number of samples with 0, 1, 2, ... confounder spans, per level."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    top = max((max(v) for v in counts.values() if len(v)), default=0)
    xs = np.arange(top + 1)
    levels = [k for k, v in counts.items() if len(v)]
    width = 0.8 / max(len(levels), 1)
    for i, level in enumerate(levels):
        hist = np.bincount(np.asarray(counts[level], dtype=int), minlength=top + 1)
        ax.bar(xs + (i - (len(levels) - 1) / 2) * width, hist, width=width, label=level,
               color=COLORS[i % len(COLORS)])
    ax.set_xticks(xs)
    ax.set_xlabel("confounder spans per sample")
    ax.set_ylabel("samples")
    ax.set_title("Spans per sample")
    if levels:
        ax.legend(frameon=False)
    return _save(fig, path)


def group_models(models: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Average rows that share a ``group`` (per layer, mean and uniform); others stay as given."""
    order: list[Any] = []
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for i, m in enumerate(models):
        key = m.get("group") if m.get("group") is not None else ("row", i)
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(m)

    def avg(values: list[Any]) -> float | None:
        vals = [float(v) for v in values if v is not None]
        return sum(vals) / len(vals) if vals else None

    out: list[Mapping[str, Any]] = []
    for key in order:
        rows = groups[key]
        if len(rows) == 1:
            out.append(rows[0] if isinstance(key, tuple) else {**rows[0], "label": key})
            continue
        n_layers = max(len(r.get("per_layer") or []) for r in rows)
        out.append({
            "label": f"{key} (mean of {len(rows)} runs)",
            "per_layer": [avg([(r.get("per_layer") or [None] * n_layers)[i]
                               if i < len(r.get("per_layer") or []) else None for r in rows])
                          for i in range(n_layers)],
            "mean": avg([r.get("mean") for r in rows]),
            "uniform": avg([r.get("uniform") for r in rows]),
        })
    return out


def plot_attention(models: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Bars of the confounder attention share per layer (and the mean), one colour a model.

    ``models``: rows of ``leaf attention`` output (``label``, ``per_layer``, ``mean``,
    optional ``uniform``). Rows with a ``group`` (``leaf run``: one row per seed) are averaged
    per group into one bar labelled ``group (mean of N runs)``.
    """
    plt = _pyplot()
    models = group_models(models)
    n_layers = max((len(m.get("per_layer") or []) for m in models), default=0)
    ncol = 2 if len(models) > 4 else 1
    legend_rows = -(-(len(models) + 1) // ncol)  # models and the uniform line, below the axes
    fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * (n_layers + 1) * max(len(models), 1)),
                                    3.2 + 0.22 * legend_rows))
    xs = np.arange(n_layers + 1)
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        vals = [v if v is not None else np.nan for v in (m.get("per_layer") or [])]
        vals = vals + [np.nan] * (n_layers - len(vals)) + [m.get("mean", np.nan)]
        ax.bar(xs + (i - (len(models) - 1) / 2) * width, 100 * np.asarray(vals, dtype=float),
               width=width, label=str(m.get("label", f"model {i}")),
               color=COLORS[i % len(COLORS)])
    uniform = [m.get("uniform") for m in models if m.get("uniform") is not None]
    if uniform:
        ax.axhline(100 * float(np.mean(uniform)), color="grey", linestyle=":", linewidth=1,
                   label="uniform attention")
    ax.set_xticks(xs, [f"L{i}" for i in range(n_layers)] + ["mean"])
    ax.set_ylabel("attention on confounders (%)")
    ax.set_title("Attention paid by response tokens to confounder spans")
    if models:  # below the plot: inside it would hide the bars
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=ncol,
                  fontsize=8)
    return _save(fig, path)
