"""PNG figures for the report (matplotlib, Agg backend: no display needed).

- :func:`plot_diff_distribution`: density of normalised differences ``norm(d_i)`` over the
  scored units (each row's 0 and 1 end points left out), with the confounder threshold tau
  (units at or left of it are candidates).
- :func:`plot_spans_per_sample`: how many confounder spans each sample got, per level.
- :func:`plot_attention`: share of attention on confounder spans, one bar per model (e.g.
  pre-distillation vs KD vs LeaF student) with the interval over runs; per layer too when
  there are several.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leaf.intervals import mean_ci

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
          "#8c8c8c", "#ccb974", "#64b5cd"]


def _pyplot():
    import matplotlib  # heavy: matplotlib loads only when a figure is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # heavy: matplotlib

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long tick labels stay whole
    _pyplot().close(fig)
    return path


def plot_diff_distribution(
    diffs: Mapping[str, Sequence[float]], path: str | Path, threshold: float | None = None,
    threshold_label: str = "tau",
) -> Path:
    """Density of normalised differences per level (step outlines, so the levels do not blend),
    with a dashed line at the threshold.

    Min-max scaling puts each scored row's lowest unit at exactly 0 and its highest at exactly
    1; those two units per row say nothing about confounders and would stand out as spikes, so
    they are left out, and the figure says how many."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    bins = np.linspace(0.0, 1.0, 41)
    ends = 0
    for i, (level, values) in enumerate(diffs.items()):
        v = np.asarray(values, dtype=float)
        inner = v[(v > 0.0) & (v < 1.0)]
        ends += len(v) - len(inner)
        if len(inner):
            ax.hist(inner, bins=bins, density=True, histtype="step", linewidth=2.0,
                    label=f"{level} ({len(inner)} units)", color=COLORS[i % len(COLORS)])
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="#c0392b", linestyle="--", linewidth=1.5,
                   label=f"{threshold_label} = {threshold:.3g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("normalised difference norm(g_T) - norm(g_S), rescaled to [0, 1]\n"
                  "(low: the student leans on the unit and the teacher does not)")
    ax.set_ylabel("density")
    ax.set_title("Teacher-student saliency difference per scored unit")
    if ends:
        ax.text(0.99, 0.97, f"{ends} units at exactly 0 or 1 left out:\nevery scored row has "
                "one of each\nafter min-max scaling", transform=ax.transAxes, ha="right",
                va="top", fontsize=8.5, color="#555")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, loc="upper left", fontsize=9)
    return _save(fig, path)


def plot_spans_per_sample(counts: Mapping[str, Sequence[int]], path: str | Path) -> Path:
    """Grouped bars: number of samples with 0, 1, 2, ... confounder spans, per level."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
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


def _interval(values: list[float]) -> tuple[float, float, float] | None:
    """Mean and 95% Student-t interval of ``values`` (the interval collapses with one value)."""
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return None
    ci = mean_ci(vals)
    if len(vals) < 2:
        return ci["mean"], ci["mean"], ci["mean"]
    return ci["mean"], ci["low"], ci["high"]


def group_models(models: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Average rows that share a ``group`` (per layer, mean and uniform); others stay as given.
    A group of several runs also gets ``mean_lo`` / ``mean_hi`` and ``per_layer_lo`` /
    ``per_layer_hi``: the 95% Student-t interval over its runs."""
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
        layer_values = [[(r.get("per_layer") or [])[i] if i < len(r.get("per_layer") or [])
                         else None for r in rows] for i in range(n_layers)]
        layer_ci = [_interval(v) for v in layer_values]
        mean_ci = _interval([r.get("mean") for r in rows])
        out.append({
            "label": f"{key} (mean of {len(rows)} runs)",
            "per_layer": [avg(v) for v in layer_values],
            "per_layer_lo": [c[1] if c else None for c in layer_ci],
            "per_layer_hi": [c[2] if c else None for c in layer_ci],
            "mean": avg([r.get("mean") for r in rows]),
            "mean_lo": mean_ci[1] if mean_ci else None,
            "mean_hi": mean_ci[2] if mean_ci else None,
            "uniform": avg([r.get("uniform") for r in rows]),
            "runs": len(rows),
        })
    return out


def plot_attention(models: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """The share of attention on confounder spans, one bar per model (mean over layers), with
    the 95% interval over runs as error bars; with several layers a second panel shows each
    layer. The axis is zoomed on the bars (the differences that matter are fractions of a
    point) and the figure says so; the dotted line is what uniform attention would give.

    ``models``: rows of ``leaf attention`` output (``label``, ``per_layer``, ``mean``,
    optional ``uniform``). Rows with a ``group`` (``leaf run``: one row per seed) are averaged
    per group into one bar labelled ``group (mean of N runs)``.
    """
    plt = _pyplot()
    models = group_models(models)
    n_layers = max((len(m.get("per_layer") or []) for m in models), default=0)
    runs = sorted({int(m["runs"]) for m in models if m.get("runs")})
    labels = [re.sub(r" \(mean of \d+ runs\)$", "", str(m.get("label", f"model {i}")))
              if len(runs) == 1 else str(m.get("label", f"model {i}"))
              for i, m in enumerate(models)]
    panels = 2 if n_layers > 1 else 1
    height = max(3.2, 0.42 * len(models) + 1.6)
    fig, axes = plt.subplots(1, panels, figsize=(9.0 if panels == 1 else 12.0, height),
                             squeeze=False)
    ax = axes[0][0]
    ys = np.arange(len(models))[::-1]
    means = np.array([100 * float(m["mean"]) if m.get("mean") is not None else np.nan
                      for m in models])
    lo = np.array([100 * float(m.get("mean_lo", m["mean"])) if m.get("mean") is not None
                   else np.nan for m in models])
    hi = np.array([100 * float(m.get("mean_hi", m["mean"])) if m.get("mean") is not None
                   else np.nan for m in models])
    has_ci = any(m.get("mean_lo") is not None for m in models)
    xerr = np.vstack([means - lo, hi - means]) if has_ci else None
    ax.barh(ys, means, xerr=xerr, capsize=4, color=[COLORS[i % len(COLORS)]
                                                    for i in range(len(models))], height=0.6)
    uniform = [m.get("uniform") for m in models if m.get("uniform") is not None]
    shown = [v for v in (*lo, *hi, *means) if np.isfinite(v)]
    if uniform:
        u = 100 * float(np.mean(uniform))
        ax.axvline(u, color="black", linestyle=":", linewidth=1.2)
        shown.append(u)
    notes = []
    if len(runs) == 1:
        notes.append(f"mean of {runs[0]} runs per model")
    if has_ci:
        notes.append("error bars: 95% interval over runs")
    else:
        notes.append("one run per model: no interval over runs")
    if shown:
        span = max(shown) - min(shown)
        pad = max(span * 0.3, 0.02 * max(shown), 0.01)
        left = max(0.0, min(shown) - pad)
        ax.set_xlim(left, max(shown) + pad)
        if left > 0:
            notes.append(f"the axis starts at {left:.2f}%, not 0")
    for y, v, top in zip(ys, means, hi, strict=True):
        if np.isfinite(v):
            ax.text(max(v, top) if np.isfinite(top) else v, y, f"  {v:.2f}%", va="center",
                    ha="left", fontsize=9)
    if uniform:
        notes.append(f"dotted line: uniform attention ({u:.2f}%)")
    ax.set_yticks(ys, labels, fontsize=9.5)
    ax.set_xlabel("attention on confounder spans, mean over layers (%)"
                  + ("\n" + "; ".join(notes[:2]) if notes else "")
                  + ("\n" + "; ".join(notes[2:]) if len(notes) > 2 else ""))
    ax.set_title("Attention paid by response tokens to confounder spans", fontsize=11)
    if panels == 2:
        ax2 = axes[0][1]
        xs = np.arange(n_layers)
        for i, m in enumerate(models):
            vals = np.array([100 * v if v is not None else np.nan
                             for v in (m.get("per_layer") or [])], dtype=float)
            vals = np.concatenate([vals, np.full(n_layers - len(vals), np.nan)])
            err = None
            if m.get("per_layer_lo"):
                low = np.array([100 * v if v is not None else np.nan for v in m["per_layer_lo"]])
                high = np.array([100 * v if v is not None else np.nan for v in m["per_layer_hi"]])
                err = np.vstack([vals - low, high - vals])
            ax2.errorbar(xs + (i - (len(models) - 1) / 2) * 0.06, vals, yerr=err, marker="o",
                         capsize=3, color=COLORS[i % len(COLORS)], label=labels[i])
        ax2.set_xticks(xs, [f"layer {i}" for i in range(n_layers)])
        ax2.set_ylabel("attention on confounder spans (%)")
        ax2.set_title("Per layer (axis zoomed on the values)", fontsize=11)
    return _save(fig, path)
