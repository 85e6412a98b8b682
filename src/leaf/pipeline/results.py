"""Collect a run's metrics into ``results.json`` and summarise them with confidence intervals.

``results.json``::

    {"name": ..., "quick": false, "splits": ["test_id", ...], "seeds": [0, 1, 2],
     "replicates": ["data0", "data1", "data2"],
     "models": {"teacher@data0": {"test_id": {"accuracy": 1.0, "n": 200}, ...},
                "kd-s0@data0": {...}},
     "variants": {"kd": {"sets": [], "hybrid_lambda": 1.0}, ...},
     "rows": [{"key": "kd", "label": "KD w/o mask", "members": ["kd-s0@data0", ...],
               "replicates": 3, "hybrid_lambda": 1.0 (null for teacher and student),
               "counterfactual_rows": [0, 0, 0] (per run; null for teacher and student),
               "cells": {"test_id": {"mean": .9, "lo": .85, "hi": .95, "values": [...], "n": 200,
                                     "interval": "bootstrap: seeds x items", "half_width",
                                     "detectable", "resamples": 2000, "seeds": 3,
                                     "items": [200, ...], "shared_items": false,
                                     "dominant": "items"}}}],
     "differences": [{"key": "leaf_instr", "baseline": "kd", "pairs": 3,
                      "runs_without_counterfactuals": 0,
                      "cells": {"test_anti": {"mean", "lo", "hi", "values", "interval", ...}}}],
     "pair_check": {"data0": {"data": "data0", "screened": {"n", "teacher", "student"},
                              "tests": {"test_id": {"n", "teacher", "student"}},
                              "teacher_not_better": [...]}},
     "counts": {"data0": {"train": 1000, "screened": 1000, "teacher_right_student_wrong": 41,
                          "scored": 41, "sets": {"instruction_span": {"samples": 41,
                          "counterfactuals": 60, "verified": 14, "rejected": 46,
                          "signal": {"cf_kl_row": .3, "orig_kl_row": 5.3, "ratio_row": .06,
                                     ...} (verified sets; leaf.distill.signal)}}}},
     "detection": {"gradient": {"n_samples": 120, "span_recall": {"mean": ..., "lo": ...},
                                "token_precision": {...}, "replicates": {"data0": {...}}}},
     "attention": {"split": "test_anti", "spans": "planted", "planted_part": "distractor",
                   "rows": [{"key": "kd", "label": ..., "members": [...], "replicates": 3,
                             "n_items": [100, ...], "share": {"mean", "lo", "hi", "values",
                             "interval"}, "uniform": {...}, "per_layer": [...]}]} | null,
     "truncated": {answers cut at max_new_tokens per stage: leaf.pipeline.truncation},
     "timings": {"stage": seconds, ...}, "total_seconds": 123.4}

Intervals (docs/intervals.md): a hierarchical bootstrap over seeds, then test items, from the
per-item rows of each evaluation (``metrics.samples.jsonl``); without them, Student-t over
seeds or Wilson over one run's samples (``"t over seeds"``, ``"Wilson over samples"``). The file
is strict JSON: an undefined number is null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from leaf.data.jsonl import finite_json, iter_jsonl, write_json_atomic
from leaf.intervals import bootstrap_interval, interval, paired_difference
from leaf.pipeline.attention_stage import summarise_attention
from leaf.pipeline.config import LABELS, RunConfig, group_of
from leaf.pipeline.manifest import Manifest
from leaf.pipeline.truncation import truncation_counts
from leaf.stages import read_signal


def score_of(metrics: dict) -> float:
    """The headline score of a ``leaf eval`` metrics object (accuracy, pass@1 or EM)."""
    for key in ("accuracy", "pass@1", "em"):
        if key in metrics:
            return float(metrics[key])
    raise KeyError(f"no accuracy, pass@1 or em in metrics {sorted(metrics)}")


def item_score(row: dict) -> float:
    """One test item's score from a ``metrics.samples.jsonl`` row: the share of its responses
    graded right (several responses, as pass@1 counts them), its exact match (qa), else 1.0
    when ``correct`` and 0.0 when not."""
    if row.get("n_responses"):
        return row["n_correct"] / row["n_responses"]
    if isinstance(row.get("em"), int | float):
        return float(row["em"])
    return float(bool(row.get("correct")))


def read_item_scores(metrics_path: Path) -> dict[str, float] | None:
    """Test item id -> score, from the per-sample rows beside a ``metrics.json`` (None when
    the evaluation wrote none)."""
    path = metrics_path.with_name(metrics_path.stem + ".samples.jsonl")
    if not path.is_file():
        return None
    return {str(r["id"]): item_score(r) for _, r in iter_jsonl(path)}


def group_cell(members: list[str], got: list[dict], items: list[dict[str, float] | None]
               ) -> dict:
    """A group's cell on one split: the hierarchical bootstrap over its members (seeds or data
    replicates) and their test items when every member has per-item scores (items shared when
    the members share one data replicate), else Student-t over members / Wilson over samples."""
    if got and all(i for i in items):
        shared = len({m.rsplit("@", 1)[-1] for m in members}) == 1
        ids = sorted(set.intersection(*(set(i) for i in items))) if shared else None
        units = [[i[k] for k in ids] for i in items] if shared else \
            [list(i.values()) for i in items]
        if all(units):
            return {**bootstrap_interval(units, shared_items=shared),
                    "values": [g["accuracy"] for g in got], "n": got[0]["n"]}
    return {**interval([g["accuracy"] for g in got], got[0]["n"]), "n": got[0]["n"]}


def summarise(models: dict[str, dict], groups: dict[str, list[str]],
              splits: list[str], lambdas: dict[str, float] | None = None,
              trained_on: dict[str, int] | None = None,
              items: dict[str, dict[str, dict[str, float] | None]] | None = None) -> list[dict]:
    """One table row per group of evaluated models (``"teacher"`` -> its replicates, ...);
    ``items``: member -> split -> test item id -> score, for the bootstrap intervals."""
    rows = []
    for key, members in groups.items():
        members = [m for m in members if m in models]
        if not members:
            continue
        cells = {}
        for split in splits:
            have = [m for m in members if split in models[m]]
            got = [models[m][split] for m in have]
            if got:
                cells[split] = group_cell(have, got, [(items or {}).get(m, {}).get(split)
                                                      for m in have])
        rows.append({"key": key, "label": LABELS.get(key, key), "members": members,
                     "replicates": len(members), "cells": cells,
                     "hybrid_lambda": (lambdas or {}).get(key),
                     "mixing": "uniform" if key in (lambdas or {}) and lambdas[key] is None
                     else None,
                     "counterfactual_rows": [(trained_on or {})[m] for m in members]
                     if trained_on and all(m in trained_on for m in members) else None})
    return rows


def paired_differences(results: dict[str, Any], baseline: str = "kd",
                       items: dict[str, dict[str, dict[str, float] | None]] | None = None,
                       ) -> list[dict]:
    """Every variant that adds rows minus ``baseline`` (KD w/o mask), paired by seed (and by
    test item, with ``items``: member -> split -> item id -> score)."""
    variants = results.get("variants") or {}
    if baseline not in variants:
        return []
    get = (lambda m, sp: (items.get(m) or {}).get(sp)) if items else None  # noqa: E731
    return [paired_difference(results, key, baseline, labels=LABELS, items=get)
            for key, spec in variants.items()
            if key != baseline and (spec.get("sets") or spec.get("extra_originals"))]


def _count_rows(path: Path) -> int:
    return sum(1 for _ in iter_jsonl(path)) if path.exists() else 0


def set_counts(path: Path) -> dict[str, int]:
    """How many samples got counterfactuals, how many were made, verified, rejected, and kept
    for training (not rejected: verified, or unchecked); with testbed rows (``planted``),
    ``kept_remove_planted``: kept instruction-level counterfactuals whose removed spans cover
    every planted misleading span of their row (the whole planted number is gone)."""
    made = verified = rejected = whole = 0
    origins: set[str] = set()
    for _, r in iter_jsonl(path):
        if r.get("kind") != "counterfactual":
            continue
        made += 1
        origins.add(r.get("origin_id"))
        verified += r.get("verified") is True
        rejected += r.get("verified") is False
        if r.get("verified") is not False and removes_planted(r):
            whole += 1
    return {"samples": len(origins), "counterfactuals": made, "verified": verified,
            "rejected": rejected, "kept": made - rejected, "kept_remove_planted": whole}


def set_signal(path: Path) -> dict[str, Any]:
    """``{"signal": ...}``: the KL figures ``leaf prune`` measured beside a verified set (kept
    counterfactuals against their originals, :class:`leaf.distill.signal.SignalFigures`);
    empty when there are none (no verification, nothing kept)."""
    figures = read_signal(path)
    return {} if figures is None else {"signal": figures.as_dict()}


def removes_planted(row: dict[str, Any]) -> bool:
    """True when an instruction-level counterfactual removed every planted misleading span."""
    misleading = ((row.get("planted") or {}).get("misleading")) or []
    if row.get("level") != "instruction" or not misleading:
        return False
    cuts = row.get("pruned") or []
    return all(any(a <= s and e <= b for a, b in cuts) for s, e in misleading)


def replicate_counts(cfg: RunConfig, root: Path) -> dict[str, Any]:
    """Samples screened, scored and turned into counterfactuals in one data replicate."""
    screened = root / "screen" / "screened.jsonl"
    target = sum(1 for _, r in iter_jsonl(screened)
                 if r.get("teacher_correct") and not r.get("student_correct")) \
        if screened.exists() else 0
    scores = root / "detect" / f"{cfg.detect.levels[0]}.jsonl"
    scored = len({r["id"] for _, r in iter_jsonl(scores)}) if scores.exists() else 0
    return {
        "train": _count_rows(root / "data" / "train.jsonl"),
        "screened": _count_rows(screened),
        "teacher_right_student_wrong": target,
        "scored": scored,
        "sets": {name: {**set_counts(root / "prune" / f"{name}.jsonl"),
                        **set_signal(root / "prune" / f"{name}.jsonl")}
                 for name in cfg.counterfactuals},
    }


def detection_summary(per_rep: dict[str, dict]) -> dict[str, Any]:
    """One rule's detection metrics over data replicates: totals and mean [interval]."""
    out: dict[str, Any] = {"replicates": per_rep,
                           "n_samples": sum(d.get("n_samples", 0) for d in per_rep.values())}
    for key in ("span_recall", "token_precision"):
        values = [d[key] for d in per_rep.values()
                  if key in d and not (isinstance(d[key], float) and math.isnan(d[key]))]
        if values:
            out[key] = interval(values, 0)
    return out


def collect_results(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Read every metrics file of a finished run and write ``results.json``."""
    run = Path(run_dir)
    splits = cfg.test_splits()
    models: dict[str, dict] = {}
    groups: dict[str, list[str]] = {}
    trained_on: dict[str, int] = {}  # member -> counterfactual-kind rows in its training file
    per_file: dict[Path, int] = {}  # seeds sharing a data replicate share the file: read once
    items: dict[str, dict[str, dict[str, float] | None]] = {}  # member -> split -> item scores
    for key, dkey in cfg.model_keys():
        member = f"{key}@{dkey}"
        groups.setdefault(group_of(key), []).append(member)
        if group_of(key) in cfg.distill.variants:
            train_file = run / dkey / "train" / f"{group_of(key)}.jsonl"
            if train_file not in per_file:
                per_file[train_file] = sum(r.get("kind") == "counterfactual"
                                           for _, r in iter_jsonl(train_file)) \
                    if train_file.exists() else 0
            trained_on[member] = per_file[train_file]
        for split in splits:
            path = run / "eval" / key / dkey / split / "metrics.json"
            if path.exists():
                m = json.loads(path.read_text(encoding="utf-8"))
                models.setdefault(member, {})[split] = {"accuracy": score_of(m), "n": int(m["n"])}
                items.setdefault(member, {})[split] = read_item_scores(path)
    dkeys = list(dict.fromkeys(cfg.replicates().values()))
    counts = {d: replicate_counts(cfg, run / d) for d in dkeys}
    detection = {}
    for rule in cfg.detection.rules:
        per_rep = {d: json.loads((run / d / "detection" / f"{rule}.json").read_text("utf-8"))
                   for d in dkeys if (run / d / "detection" / f"{rule}.json").exists()}
        if per_rep:
            detection[rule] = detection_summary(per_rep)
    attention = None
    if (run / "attention.json").is_file():
        attention = summarise_attention(json.loads((run / "attention.json").read_text("utf-8")))
    stages = Manifest(run).stages
    timings = {k: v.get("seconds_total", v.get("seconds")) for k, v in stages.items()}
    plain = cfg.as_dict()
    # under uniform mixing there is no lambda: every token weighs the same
    lambdas = {v: (None if cfg.mixing_of(v) == "uniform" else cfg.lambda_of(v))
               for v in cfg.distill.variants}
    results = {
        "name": cfg.name,
        "quick": cfg.is_quick,
        "config_path": cfg.config_path,
        "data": plain["data"],
        "teacher": cfg.teacher,
        "student": cfg.student,
        "splits": splits,
        "seeds": cfg.seeds,
        "replicates": dkeys,
        "variants": plain["distill"]["variants"],
        "distill": plain["distill"]["args"],
        "counterfactual_sets": {n: {**plain["prune"], **{k: v for k, v in spec.items()
                                                        if v is not None}}
                                for n, spec in plain["counterfactuals"].items()},
        "prune": plain["prune"],
        "models": models,
        "rows": summarise(models, groups, splits, lambdas, trained_on, items),
        "counts": counts,
        "detection": detection,
        "attention": attention,
        "truncated": truncation_counts(cfg, run),
        "timings": timings,
        "total_seconds": round(sum(t or 0 for t in timings.values()), 1),
    }
    results["differences"] = paired_differences(results, items=items)
    results["pair_check"] = {d: json.loads((run / d / "pair_check.json").read_text("utf-8"))
                             for d in dkeys if (run / d / "pair_check.json").is_file()}
    results = finite_json(results)  # strict JSON: null where a number is undefined
    write_json_atomic(run / "results.json", results)
    return results
