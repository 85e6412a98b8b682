"""Markdown tables from ``results.json`` (printed by ``leaf demo``, written to RESULTS.md)."""

from __future__ import annotations

from leaf.pipeline.config import SPLIT_LABELS
from leaf.pipeline.results import LABELS


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _cell(c: dict | None) -> str:
    if not c:
        return "-"
    return f"{c['mean']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"


def accuracy_table(results: dict, keys: list[str] | None = None) -> str:
    """Accuracy per model group and test split: mean and 95% interval."""
    splits = results["splits"]
    header = ["model", "seeds", *[SPLIT_LABELS.get(s, s) for s in splits]]
    rows = []
    for r in results["rows"]:
        if keys is not None and r["key"] not in keys:
            continue
        seeds = str(len(r["seeds"])) if r["seeds"] else "-"
        rows.append([r["label"], seeds, *[_cell(r["cells"].get(s)) for s in splits]])
    return _table(header, rows)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "-" if v is None else str(v)


DETECTION_COLUMNS = ["n_samples", "span_recall", "token_precision", "n_planted", "n_flagged_chars"]


def detection_table(results: dict) -> str:
    """Pruned spans against the planted distractors, one row per masking rule."""
    det = results.get("detection") or {}
    if not det:
        return "(no detection metrics in this run)"
    cols = [c for c in DETECTION_COLUMNS if any(c in d for d in det.values())]
    extra = sorted({k for d in det.values() for k, v in d.items()
                    if isinstance(v, int | float) and k not in cols})
    cols += extra
    rows = [[rule, *[_fmt(d.get(c)) for c in cols]] for rule, d in det.items()]
    return _table(["rule", *cols], rows)


def counts_table(results: dict) -> str:
    """Samples screened and detected, counterfactuals made and kept per set."""
    c = results["counts"]
    rows = [[name, str(s["samples"]), str(s["counterfactuals"]), str(s["verified"]),
             str(s["rejected"])] for name, s in c["sets"].items()]
    head = (f"training samples {c['train']}; screened {c['screened']}, of which teacher right "
            f"and student wrong {c['teacher_right_student_wrong']}; scored by detect "
            f"{c['scored']}")
    return head + "\n\n" + _table(
        ["counterfactual set", "samples", "counterfactuals", "verified", "rejected"], rows)


def span_vs_collective_table(results: dict) -> str | None:
    """LeaF (instruction) with span pruning next to collective pruning, when both ran."""
    keys = [r["key"] for r in results["rows"]]
    if "leaf_instr" not in keys or "leaf_collective" not in keys:
        return None
    return accuracy_table(results, ["leaf_instr", "leaf_collective"])


def render(results: dict) -> str:
    """Every table of a run, with headings and the intervals explained."""
    parts = [
        f"## Accuracy ({results['name']}{', quick' if results.get('quick') else ''})",
        "",
        accuracy_table(results),
        "",
        "mean [95% interval]: Student-t over seeds for distilled models with >= 2 seeds; "
        "Wilson over test samples for one model (teacher, Pre-KD, or a single seed).",
        "",
        "## Detection against the planted spans",
        "",
        detection_table(results),
        "",
        "## Counterfactuals",
        "",
        counts_table(results),
    ]
    svc = span_vs_collective_table(results)
    if svc:
        parts += ["", "## Span vs collective pruning", "", svc]
    return "\n".join(parts) + "\n"


__all__ = ["LABELS", "accuracy_table", "detection_table", "counts_table",
           "span_vs_collective_table", "render"]
