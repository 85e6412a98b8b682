"""The pair check: is the teacher better than the student before distillation starts?

Distillation moves the student towards the teacher; where the teacher answers worse than the
student, it can only be expected to pull the student down. Before the first distillation a run
compares the two on the screened training data (``screen``'s ``teacher_correct`` and
``student_correct``) and on every test split both were evaluated on, per data replicate, and
writes ``<dkey>/pair_check.json``::

    {"data": "data0", "screened": {"n": 300, "teacher": 0.99, "student": 0.80},
     "tests": {"test_id": {"n": 100, "teacher": 1.0, "student": 0.95}, ...},
     "teacher_not_better": ["screened training data", ...]}

``teacher_not_better`` names where the teacher scores at most the student on the screened data
(a tie there leaves nothing to learn) or below it on a test split; a non-empty list prints one
warning. After the run, :func:`lowered_splits` names the splits where distillation left the
student below its starting point (information: a split unlike the training data can drop).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from leaf.data.jsonl import iter_jsonl
from leaf.pipeline.results import score_of

SCREENED = "screened training data"


def check_pair(dkey: str, screened: Iterable[Mapping[str, Any]],
               tests: Mapping[str, Mapping[str, float | int]]) -> dict[str, Any]:
    """The pair check of one data replicate from the screen rows and the teacher's and
    student's test scores (``tests``: split -> ``{"n", "teacher", "student"}``)."""
    rows = [r for r in screened
            if r.get("teacher_correct") is not None and r.get("student_correct") is not None]
    n = len(rows)
    screen = {"n": n,
              "teacher": sum(bool(r["teacher_correct"]) for r in rows) / n if n else None,
              "student": sum(bool(r["student_correct"]) for r in rows) / n if n else None}
    worse = []
    if n and screen["teacher"] <= screen["student"]:
        worse.append(SCREENED)
    worse += [split for split, c in tests.items() if c["teacher"] < c["student"]]
    return {"data": dkey, "screened": screen, "tests": {k: dict(v) for k, v in tests.items()},
            "teacher_not_better": worse}


def check_replicate(dkey: str, root: Path, eval_dir: Path, splits: list[str]) -> dict[str, Any]:
    """:func:`check_pair` from the files of a run: ``root/screen/screened.jsonl`` and the
    teacher's and student's ``eval_dir/<model>/<dkey>/<split>/metrics.json``."""
    tests: dict[str, dict[str, float | int]] = {}
    for split in splits:
        got = {}
        for role in ("teacher", "student"):
            path = eval_dir / role / dkey / split / "metrics.json"
            if path.is_file():
                m = json.loads(path.read_text(encoding="utf-8"))
                got[role], got["n"] = score_of(m), int(m["n"])
        if "teacher" in got and "student" in got:
            tests[split] = got
    screened = root / "screen" / "screened.jsonl"
    rows = [r for _, r in iter_jsonl(screened)] if screened.is_file() else []
    return check_pair(dkey, rows, tests)


def _pair(c: Mapping[str, Any]) -> str:
    return f"teacher {c['teacher']:.3f} vs student {c['student']:.3f}"


def pair_lines(check: Mapping[str, Any], split_labels: Mapping[str, str] | None = None
               ) -> list[str]:
    """One line: both models' scores side by side, screened data first, then each split."""
    labels = split_labels or {}
    parts = []
    s = check["screened"]
    if s["n"]:
        parts.append(f"{SCREENED} ({s['n']}): {_pair(s)}")
    parts += [f"{labels.get(k, k)} ({c['n']}): {_pair(c)}" for k, c in check["tests"].items()]
    return [f"pair check ({check['data']}): " + "; ".join(parts or ["nothing to compare"])]


def pair_warning(check: Mapping[str, Any], split_labels: Mapping[str, str] | None = None
                 ) -> str | None:
    """The one-line warning of a pair whose teacher is not better than its student, or None."""
    worse = check["teacher_not_better"]
    if not worse:
        return None
    labels = split_labels or {}
    where = ", ".join(labels.get(w, w) for w in worse)
    return (f"the teacher is not better than the student ({check['data']}: {where}); "
            "distillation cannot be expected to help: pick a stronger teacher or a weaker "
            "student (the pair check in results.json has the numbers)")


def lowered_splits(results: Mapping[str, Any]) -> dict[str, list[str]]:
    """Split -> the distilled groups whose mean accuracy there is below the Pre-KD student's
    (its starting point); splits with none are left out."""
    rows = {r["key"]: r for r in results.get("rows") or []}
    student = rows.get("student")
    if not student:
        return {}
    out: dict[str, list[str]] = {}
    for split in results.get("splits") or []:
        start = (student["cells"].get(split) or {}).get("mean")
        if start is None:
            continue
        for key, r in rows.items():
            if key in ("teacher", "student"):
                continue
            mean = (r["cells"].get(split) or {}).get("mean")
            if mean is not None and mean < start:
                out.setdefault(split, []).append(r["label"])
    return out
