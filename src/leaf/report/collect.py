"""Gather a run's files into the one JSON object the HTML report embeds.

Inputs (any may be missing except one of scores / counterfactuals):
- scores rows (``leaf detect``): ``id``, ``level``, ``segment``, ``field``, ``prefix_end``,
  ``units``, ``teacher``, ``student``, ``diff`` (see ``interfaces``);
- counterfactual rows (``leaf prune``): ``origin_id``, ``kind``, ``level``, ``pruned``,
  ``verified``, ``masking``, ``strategy``; optional ``threshold_mode``, ``tau``, ``quantile``
  (how the spans were chosen) and ``threshold`` (the cut-off actually used for that row);
- sample rows (``samples.jsonl`` or ``screened.jsonl``): the text, ``teacher_correct`` /
  ``student_correct`` and both models' answers (``teacher_response``, ``student_response``)
  when screened, the gold ``answer`` and, on testbed data, the ``planted`` spans;
- ``leaf attention`` outputs;
- a ``leaf run`` directory's ``results.json``: the run's tables (accuracy, paired differences,
  answers cut at ``max_new_tokens``, detection against planted spans when the data has them,
  counterfactual counts), shown first.

Each scored row's candidate units, runs and cut-off come from
:func:`leaf.detect.spans.confounders`, the rule ``leaf prune`` applies, on the sample's text
(the rule needs it: whitespace units are never candidates); without the text they are unknown.

Values are stored as integers in per mille to keep a 10,000-sample report a few MB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leaf.detect.scores_file import scored_text
from leaf.detect.spans import Confounders, confounders
from leaf.detect.thresholds import DEFAULT_QUANTILE, DEFAULT_TAU
from leaf.distill.signal import LOW_SIGNAL_LINE
from leaf.errors import LeafError, LeafInputError
from leaf.pipeline import tables
from leaf.pipeline.config import SPLIT_LABELS
from leaf.pipeline.pair_check import pair_warning

_RESPONSE_ID = re.compile(r"#r(\d+)\.\d+$")


@dataclass
class RunFiles:
    """The files a report is built from (see :func:`find_run_files` for the names)."""

    scores: list[Path] = field(default_factory=list)
    counterfactuals: list[Path] = field(default_factory=list)
    data: Path | None = None
    attention: list[Path] = field(default_factory=list)
    results: Path | None = None


def _as_paths(base: Path, value: Any) -> list[Path]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [p if p.is_absolute() else base / p for p in map(Path, values)]


def find_run_files(run_dir: str | Path) -> RunFiles:
    """Locate report inputs in ``run_dir``.

    ``manifest.json`` (optional), top level or under ``"files"``: keys ``scores``,
    ``counterfactuals``, ``attention`` (a path or a list, relative to ``run_dir``), and
    ``screened`` or ``data`` / ``samples``. Whatever the manifest does not name is looked up by
    name: ``scores*.jsonl``, ``counterfactuals*.jsonl``, ``screened.jsonl`` (else
    ``samples.jsonl``) and ``attention*.json``, in ``run_dir`` and its direct subfolders.
    """
    base = Path(run_dir)
    if not base.is_dir():
        raise LeafError(f"{base}: not a directory")
    manifest: dict[str, Any] = {}
    mpath = base / "manifest.json"
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise LeafInputError(mpath, exc.lineno, None, f"not valid JSON ({exc.msg})") from None
        manifest = manifest.get("files", manifest) if isinstance(manifest, dict) else {}

    def glob(pattern: str) -> list[Path]:
        found = sorted(base.glob(pattern)) + sorted(base.glob(f"*/{pattern}"))
        return [p for p in found if p.is_file()]

    files = RunFiles()
    files.scores = _as_paths(base, manifest.get("scores")) or glob("scores*.jsonl")
    files.counterfactuals = (_as_paths(base, manifest.get("counterfactuals"))
                             or glob("counterfactuals*.jsonl"))
    files.attention = _as_paths(base, manifest.get("attention")) or glob("attention*.json")
    data = [p for k in ("screened", "data", "samples") for p in _as_paths(base, manifest.get(k))]
    data = data or glob("screened.jsonl") or glob("samples.jsonl")
    files.data = data[0] if data else None
    results = _as_paths(base, manifest.get("results")) or \
        ([base / "results.json"] if (base / "results.json").is_file() else [])
    files.results = results[0] if results else None
    for p in [*files.scores, *files.counterfactuals, *files.attention,
              *([files.data] if files.data else []), *([files.results] if files.results else [])]:
        if not p.is_file():
            raise LeafError(f"{mpath}: names {p}, which does not exist")
    if not files.scores and not files.counterfactuals:
        raise LeafError(f"{base}: found no scores*.jsonl or counterfactuals*.jsonl")
    return files


def _milli(values: Sequence[float]) -> list[int | None]:
    """Per mille integers; a value that is not a finite number becomes null (shown blank)."""
    out: list[int | None] = []
    for v in values:
        f = float(v) if isinstance(v, int | float) else float("nan")
        out.append(int(round(1000 * f)) if np.isfinite(f) else None)
    return out


def _segment_of(row: dict[str, Any]) -> int:
    if row.get("level") != "response":
        return 0
    if isinstance(row.get("segment"), int):
        return row["segment"]
    m = _RESPONSE_ID.search(str(row.get("id", "")))
    return int(m.group(1)) if m else 1


def threshold_settings(
    cf_rows: Iterable[dict[str, Any]], mode: str | None = None, tau: float | None = None,
    quantile: float | None = None,
) -> dict[str, Any]:
    """The threshold rule to show: flags first, then the counterfactual rows, then defaults.

    From the rows: ``threshold_mode`` / ``tau`` / ``quantile`` when present; otherwise the
    per-row cut-offs ``threshold`` that ``leaf prune`` writes: one common value is read as a
    fixed tau, differing values as ``mode: "per-row"`` (each scored row shows its own cut-off).
    """
    found: dict[str, Any] = {}
    cuts: set[float] = set()
    for row in cf_rows:
        for key in ("threshold_mode", "tau", "quantile"):
            if key in row and row[key] is not None and key not in found:
                found[key] = row[key]
        if row.get("kind") == "counterfactual" and isinstance(row.get("threshold"), int | float):
            cuts.add(round(float(row["threshold"]), 9))
    if mode is not None or tau is not None or quantile is not None:
        source = "flags"
    elif found:
        source = "counterfactuals"
    elif len(cuts) == 1:
        source, found = "leaf prune cut-offs", {"threshold_mode": "fixed", "tau": cuts.pop()}
    elif cuts:
        source, found = "leaf prune per-row cut-offs", {"threshold_mode": "per-row"}
    else:
        source = "default"
    return {
        "mode": mode or found.get("threshold_mode", "fixed"),
        "tau": float(tau if tau is not None else found.get("tau", DEFAULT_TAU)),
        "quantile": float(quantile if quantile is not None
                          else found.get("quantile", DEFAULT_QUANTILE)),
        "source": source,
    }


def _scored_text(s: dict[str, Any], row: dict[str, Any]) -> str | None:
    """The text a scores row's units index, or None when the run's files do not hold it."""
    if row.get("level", "instruction") == "instruction":
        return s["ins"]
    if s["resp"] is None or not isinstance(row.get("prefix_end"), int):
        return None
    return scored_text({"response": s["resp"]}, row)


def row_confounders(
    row: dict[str, Any], text: str | None, th: dict[str, Any], recorded: float | None
) -> tuple[Confounders | None, str | None]:
    """The confounder rule's result for one scores row, or None and why it cannot be had.

    ``recorded`` is the cut-off ``leaf prune`` wrote for this row: applied as a fixed tau it
    reproduces prune's flags whatever its mode, since every mode flags ``norm(d_i) <= t``.
    The text is needed because whitespace units are never candidates and spans bridge
    whitespace; without it the report says so instead of guessing.
    """
    if recorded is not None:
        mode, tau = "fixed", recorded
    elif th["mode"] == "per-row":
        return None, ("no cut-off shown: leaf prune made no counterfactual from this text, "
                      "so it recorded none")
    else:
        mode, tau = th["mode"], th["tau"]
    if text is None:
        return None, "candidates unknown: the sample's text is not in the run's files"
    units, diff = row.get("units") or [], row.get("diff") or []
    if any(e > len(text) for _, e in units):
        return None, "candidates unknown: the units do not fit the sample's text"
    if len(diff) != len(units):  # the report reads scores unchecked; say so, do not crash
        return None, "candidates unknown: 'diff' and 'units' differ in length"
    return confounders(text, units, diff, mode, tau, th["quantile"]), None


def candidate_fields(rule: Confounders | None, why: str | None) -> dict[str, Any]:
    """A view's cut-off, candidate units (indices), their count and runs; None when unknown."""
    if rule is None:
        return {"cut": None, "c": None, "nc": None, "runs": None, "why": why}
    flat = not np.isfinite(rule.threshold)
    cand = [i for i, f in enumerate(rule.flags) if f]
    return {"cut": None if flat else round(rule.threshold, 4), "c": cand, "nc": len(cand),
            "runs": len(rule.spans),
            "why": "differences all equal: nothing stands out, no candidates" if flat else None}


def build_report_data(
    scores: Sequence[dict[str, Any]],
    counterfactuals: Sequence[dict[str, Any]] = (),
    samples: Sequence[dict[str, Any]] = (),
    attention: Sequence[dict[str, Any]] = (),
    *,
    threshold_mode: str | None = None,
    tau: float | None = None,
    quantile: float | None = None,
    title: str = "LeaF report",
    results: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The object embedded in the report: the run's results (``results.json`` of ``leaf run``,
    optional), samples with their views, counterfactuals, summary."""
    th = threshold_settings(counterfactuals, threshold_mode, tau, quantile)
    by_id: dict[str, dict[str, Any]] = {}
    order: list[str] = []

    def sample(sid: str) -> dict[str, Any]:
        if sid not in by_id:
            by_id[sid] = {"id": sid, "task": None, "ins": None, "resp": None, "tc": None,
                          "sc": None, "ta": None, "sa": None, "tt": False, "st": False,
                          "gold": None, "pl": None, "views": [], "cfs": []}
            order.append(sid)
        return by_id[sid]

    for row in samples:
        s = sample(str(row["id"]))
        s.update(task=row.get("task"), ins=row.get("instruction"), resp=row.get("response"),
                 tc=row.get("teacher_correct"), sc=row.get("student_correct"),
                 ta=row.get("teacher_response"), sa=row.get("student_response"),
                 tt=bool(row.get("teacher_truncated")), st=bool(row.get("student_truncated")),
                 gold=_gold(row.get("answer")), pl=planted_spans(row))
    row_cut: dict[tuple[str, str, int], float] = {}
    for row in counterfactuals:
        origin = str(row.get("origin_id", row.get("id")))
        s = sample(origin)
        if row.get("kind") == "original":
            for key, src in (("task", "task"), ("ins", "instruction"), ("resp", "response"),
                             ("tc", "teacher_correct"), ("sc", "student_correct"),
                             ("ta", "teacher_response"), ("sa", "student_response")):
                if s[key] is None and row.get(src) is not None:
                    s[key] = row[src]
            if s["gold"] is None:
                s["gold"] = _gold(row.get("answer"))
            if s["pl"] is None:
                s["pl"] = planted_spans(row)
            continue
        level, seg = row.get("level", "instruction"), _segment_of(row)
        if isinstance(row.get("threshold"), int | float) and np.isfinite(row["threshold"]):
            row_cut[(origin, level, seg)] = float(row["threshold"])
        s["cfs"].append({"id": str(row.get("id")), "level": level, "seg": seg,
                         "pruned": [list(p) for p in row.get("pruned") or []],
                         "verified": row.get("verified"), "masking": row.get("masking"),
                         "strategy": row.get("strategy")})

    diffs: dict[str, list[float]] = {"instruction": [], "response": []}
    cuts: list[float] = []
    for row in scores:
        s = sample(str(row["id"]))
        level = row.get("level", "instruction")
        seg = int(row.get("segment") or 0)
        d = row.get("diff") or []
        # the cut-off leaf prune used for this row, unless flags ask for another rule
        recorded = None if th["source"] == "flags" else row_cut.get((s["id"], level, seg))
        rule, why = row_confounders(row, _scored_text(s, row), th, recorded)
        if rule is not None and np.isfinite(rule.threshold):
            cuts.append(rule.threshold)
        diffs.setdefault(level, []).extend(float(x) for x in d if np.isfinite(x))
        s["views"].append({
            "level": level, "seg": seg, "field": row.get("field", level),
            "pe": row.get("prefix_end"), "kind": row.get("unit_kind", "token"),
            "u": [int(x) for span in row.get("units") or [] for x in span],
            "t": _milli(row.get("teacher") or []), "s": _milli(row.get("student") or []),
            "d": _milli(d), **candidate_fields(rule, why),
        })
    ordered = [by_id[i] for i in order]
    for s in ordered:
        s["views"].sort(key=lambda v: (v["level"] != "instruction", v["seg"]))
    return {
        "title": title,
        "results": results_section(results) if results else None,
        "threshold": th,
        "summary": summarise(ordered, diffs, cuts, th),
        "samples": ordered,
        "attention": list(attention),
        "_diffs": diffs,  # for the plots; dropped before embedding
    }


def _gold(answer: Any) -> str | None:
    """The gold answer as text (a list of accepted answers joined), or None."""
    if answer is None:
        return None
    if isinstance(answer, list):
        return " | ".join(map(str, answer))
    return str(answer)


def planted_spans(row: dict[str, Any]) -> dict[str, list[list[int]]] | None:
    """A testbed row's planted confounder spans in its instruction, by part (``misleading``:
    the number that misleads; ``distractor``: the whole sentence), or None. Spans that are not
    ``[start, end)`` pairs inside the instruction are dropped (the report reads rows as given)."""
    planted = row.get("planted")
    text = row.get("instruction")
    if not isinstance(planted, dict) or not isinstance(text, str):
        return None
    out: dict[str, list[list[int]]] = {}
    for part in ("misleading", "distractor"):
        spans = [[int(a), int(b)] for a, b in (p for p in planted.get(part) or []
                                                if isinstance(p, list | tuple) and len(p) == 2)
                 if isinstance(a, int) and isinstance(b, int) and 0 <= a < b <= len(text)]
        if spans:
            out[part] = spans
    return out or None


def results_section(results: dict[str, Any]) -> dict[str, Any]:
    """The run's headline tables for the top of the report, made by the same functions as
    ``tables.md`` (:mod:`leaf.pipeline.tables`): each ``{"id", "heading", "header", "rows",
    "note"}`` and optional ``lines`` (sentences shown under the table: the verdict that ends
    the headline, the pair check's warning); the differences also carry ``signs`` per cell
    (+1 / -1 where the 95% interval lies above / below 0, else 0)."""
    name = f"{results.get('name', 'run')}{', quick' if results.get('quick') else ''}"
    blocks: list[dict[str, Any]] = []

    def add(ident: str, heading: str, got: Any, note: str, **extra: Any) -> None:
        if got:
            blocks.append({"id": ident, "heading": heading, "header": got[0], "rows": got[1],
                           "note": note, **extra})

    try:
        diffs = tables.difference_rows(results)
        signs = [[_sign(d["cells"].get(split)) for split in results["splits"]]
                 for d in results.get("differences") or []]
        add("differences", "LeaF minus KD, paired by seed", diffs, tables.DIFFERENCES_NOTE,
            signs=signs, first_value_column=2,
            lines=[x for x in (tables.lowered_line(results), tables.verdict(results)) if x])
        add("accuracy", "Accuracy per variant", tables.accuracy_rows(results),
            tables.ACCURACY_NOTE)
        add("truncated", "Answers cut at max_new_tokens", tables.truncation_rows(results),
            tables.truncation_note(results))
        add("detection", "Detection against the planted spans", tables.detection_rows(results),
            "pruned spans scored against the testbed's planted distractors, per masking rule: "
            "span recall (share of planted numbers a counterfactual removes whole) and token "
            "precision; mean [95% interval] over data replicates.")
        if results.get("counts"):
            reps = len(results["counts"])
            add("counts", "Counterfactuals: made, verified and kept",
                tables.count_rows(results, pooled=True),
                f"totals over the {reps} data replicate{'s' if reps != 1 else ''} "
                "(tables.md has them one by one); kept: not rejected by verification (sets "
                "without verification keep every row). " + tables.counts_line(results) + ".")
        add("signal", "Counterfactual signal before distillation", tables.signal_rows(results),
            tables.SIGNAL_NOTE,
            lines=[f"{', '.join(low)}: {LOW_SIGNAL_LINE}."
                   for low in [tables.signal_low_sets(results)] if low])
        add("attention", "Attention on the planted distractor", tables.attention_rows(results),
            tables.attention_note(results))
        add("pair_check", "Pair check: teacher and student before distillation",
            tables.pair_check_rows(results),
            "teacher / student accuracy on the screened training data and each test split, "
            "per data replicate, measured before any distillation.",
            lines=[f"Warning: {w}" for w in (pair_warning(c, SPLIT_LABELS) for c in
                                             (results.get("pair_check") or {}).values()) if w])
    except (KeyError, TypeError, ValueError) as exc:
        raise LeafError(f"results.json: not a `leaf run` results file ({exc!r})") from None
    return {"name": name, "blocks": blocks}


def _sign(cell: dict[str, Any] | None) -> int:
    if not cell:
        return 0
    lo, hi = cell.get("lo"), cell.get("hi")
    if isinstance(lo, float) and np.isfinite(lo) and lo > 0:
        return 1
    if isinstance(hi, float) and np.isfinite(hi) and hi < 0:
        return -1
    return 0


def spans_per_sample(samples: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Per level, the number of distinct confounder spans of each scored (or pruned) sample.

    Counted from the counterfactuals' ``pruned`` spans when the sample has counterfactual rows
    for that level; otherwise from the candidate runs of its scored rows (the spans the rule
    gives, :func:`leaf.detect.spans.confounders`). A sample whose runs are unknown (no text,
    no cut-off) is left out rather than counted as zero.
    """
    out: dict[str, list[int]] = {}
    for s in samples:
        levels = {v["level"] for v in s["views"]} | {c["level"] for c in s["cfs"]}
        for level in sorted(levels):
            cfs = [c for c in s["cfs"] if c["level"] == level]
            runs = [v["runs"] for v in s["views"] if v["level"] == level]
            if cfs:
                n = len({(c["seg"], *p) for c in cfs for p in c["pruned"]})
            elif None in runs:
                continue
            else:
                n = sum(runs)
            out.setdefault(level, []).append(n)
    return out


def summarise(samples: Sequence[dict[str, Any]], diffs: dict[str, list[float]],
              cuts: Sequence[float], th: dict[str, Any]) -> dict[str, Any]:
    """Counts and shares shown at the top of the report."""
    cfs = [c for s in samples for c in s["cfs"]]
    verified = sum(c["verified"] is True for c in cfs)
    rejected = sum(c["verified"] is False for c in cfs)
    screened = [s for s in samples if s["tc"] is not None and s["sc"] is not None]
    views = [v for s in samples for v in s["views"]]
    spans = spans_per_sample(samples)
    per_level = {}
    for level in sorted({v["level"] for v in views} | {c["level"] for c in cfs}):
        lv = [v for v in views if v["level"] == level]
        lc = [c for c in cfs if c["level"] == level]
        known = [v for v in lv if v["nc"] is not None]  # rows whose candidates are known
        known_units = sum(len(v["d"]) for v in known)
        per_level[level] = {
            "scored_rows": len(lv),
            "units": sum(len(v["d"]) for v in lv),
            "candidate_share": (sum(v["nc"] for v in known) / known_units
                                if known_units else None),
            "rows_without_candidates": len(lv) - len(known),
            "counterfactuals": len(lc),
            "verified": sum(c["verified"] is True for c in lc),
            "rejected": sum(c["verified"] is False for c in lc),
            "spans_per_sample_mean": float(np.mean(spans[level])) if spans.get(level) else None,
            "spans_per_sample_max": max(spans[level]) if spans.get(level) else None,
        }
    return {
        "samples": len(samples),
        "scored_samples": sum(bool(s["views"]) for s in samples),
        "without_text": sum(s["ins"] is None for s in samples),
        "screened": len(screened),
        "student_wrong_teacher_right": sum(s["tc"] is True and s["sc"] is False
                                           for s in screened),
        "truncated": {"teacher": sum(bool(s.get("tt")) for s in screened),
                      "student": sum(bool(s.get("st")) for s in screened)},
        "counterfactuals": len(cfs),
        "verified": verified,
        "rejected": rejected,
        "unchecked": len(cfs) - verified - rejected,
        "verified_share": verified / (verified + rejected) if verified + rejected else None,
        "threshold_median": float(np.median(cuts)) if cuts else None,
        "levels": per_level,
        "masking": sorted({str(c["masking"]) for c in cfs if c["masking"]}),
        "strategy": sorted({str(c["strategy"]) for c in cfs if c["strategy"]}),
        "threshold": th,
    }
