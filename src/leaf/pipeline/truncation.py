"""How many of a run's answers were cut at ``max_new_tokens``, stage by stage.

Read off the stages' own files (screened rows' ``teacher_truncated`` / ``student_truncated``,
verified counterfactuals' ``truncated``, each evaluation's ``metrics.json`` ``truncated``) into
``results.json``'s ``truncated``::

    {"max_new_tokens": {"screen": 24, "evaluate": 24},
     "stages": {"screen_teacher": {"cut": 0, "answers": 1000}, "screen_student": {...},
                "verification": {"cut": 0, "answers": 120},
                "evaluation": {"cut": 0, "answers": 7200}},
     "models": {"kd-s0@data0": {"test_anti": 3}}}     # evaluations with cut answers only

Every cut answer was graded wrong (:func:`leaf.evaluate.grading.truncated_result`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leaf.data.jsonl import iter_jsonl
from leaf.pipeline.config import RunConfig

#: the stages that generate, as ``results.json`` and the tables name them
STAGES = ("screen_teacher", "screen_student", "verification", "evaluation")


def truncation_counts(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Cut answers and answers generated per stage, summed over the run's replicates."""
    run = Path(run_dir)
    stages = {name: {"cut": 0, "answers": 0} for name in STAGES}
    for dkey in dict.fromkeys(cfg.replicates().values()):
        screened = run / dkey / "screen" / "screened.jsonl"
        for _, row in iter_jsonl(screened) if screened.exists() else ():
            for who in ("teacher", "student"):
                stages[f"screen_{who}"]["answers"] += 1
                stages[f"screen_{who}"]["cut"] += bool(row.get(f"{who}_truncated"))
        for name, spec in cfg.counterfactuals.items():
            path = run / dkey / "prune" / f"{name}.jsonl"
            if not spec.verify or not path.exists():
                continue
            for _, row in iter_jsonl(path):
                if row.get("kind") == "counterfactual" and row.get("verified") is not None:
                    stages["verification"]["answers"] += 1
                    stages["verification"]["cut"] += bool(row.get("truncated"))
    models: dict[str, dict[str, int]] = {}
    for key, dkey in cfg.model_keys():
        for split in cfg.test_splits():
            path = run / "eval" / key / dkey / split / "metrics.json"
            if not path.exists():
                continue
            metrics = json.loads(path.read_text(encoding="utf-8"))
            cut = int(metrics.get("truncated") or 0)
            stages["evaluation"]["answers"] += int(metrics.get("n") or 0)
            stages["evaluation"]["cut"] += cut
            if cut:
                models.setdefault(f"{key}@{dkey}", {})[split] = cut
    return {"max_new_tokens": {"screen": cfg.screen.max_new_tokens,
                               "evaluate": cfg.evaluate.max_new_tokens},
            "stages": stages, "models": models}
