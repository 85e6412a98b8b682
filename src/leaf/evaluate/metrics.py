"""Grade a predictions file against a benchmark file and aggregate the metrics.

Predictions (JSONL): ``id`` and either ``response`` (one answer) or ``responses`` (a list, for
pass@k); ``leaf eval`` adds ``truncated`` to an answer cut at ``max_new_tokens`` (``true``, or
one bool per response), and a cut answer is graded wrong, never by its text
(:func:`leaf.evaluate.grading.truncated_result`). Every bench id needs a prediction and every
prediction a bench id.

Metrics (JSON): ``task``, ``n`` (problems) and
- math: ``accuracy`` (mean over all responses), ``correct`` (problems whose first response is right);
- qa: ``em``, ``f1``, ``subem`` (means; a problem with several responses counts their mean);
- code: ``pass@k`` for k = 1 and every requested k not above the responses per problem
  (unbiased estimator of Chen et al. 2021, :func:`leaf.evaluate.code.pass_at_k`).
Every block also has ``truncated``: the answers that were cut (graded wrong).
A bench mixing tasks gets ``task: "mixed"`` and one such block per task under ``by_task``.

Per-sample rows: ``id``, ``task``, ``correct`` and the grader's fields for one response
(``truncated: true`` and a ``reason`` for a cut one); with several responses ``n_responses``,
``n_correct`` and ``results`` (one grader dict each).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from leaf.data.jsonl import Records, iter_records
from leaf.errors import LeafError, LeafInputError
from leaf.evaluate.grading import CODE_TIMEOUT, grade
from leaf.evaluate.sandbox import kill_running


def read_predictions(source: Records | Mapping[str, str | list[str]],
                     name: str = "predictions") -> dict[str, list[str]]:
    """``id -> responses`` from a predictions file or list of rows (``id`` and ``response`` or
    ``responses``), or from a mapping ``id -> response(s)``; errors name the line (or row) and
    field."""
    return read_predictions_and_cuts(source, name)[0]


def read_predictions_and_cuts(source: Records | Mapping[str, str | list[str]],
                              name: str = "predictions"
                              ) -> tuple[dict[str, list[str]], dict[str, list[bool]]]:
    """:func:`read_predictions` and, for each id, which responses were cut at
    ``max_new_tokens`` (a row's ``truncated``: a bool, or one per response; absent: none)."""
    if isinstance(source, Mapping):
        source = [{"id": k, "responses" if isinstance(v, list) else "response": v}
                  for k, v in source.items()]
    out: dict[str, list[str]] = {}
    cuts: dict[str, list[bool]] = {}
    for where, line, row in iter_records(source, name):
        pid = row.get("id")
        if not isinstance(pid, str) or not pid:
            raise LeafInputError(where, line, "id", "missing or not a non-empty string")
        if "responses" in row:
            responses = row["responses"]
            if (not isinstance(responses, list) or not responses
                    or not all(isinstance(r, str) for r in responses)):
                raise LeafInputError(where, line, "responses",
                                     "must be a non-empty list of strings")
        elif isinstance(row.get("response"), str):
            responses = [row["response"]]
        else:
            raise LeafInputError(where, line, "response", "missing or not a string")
        if pid in out:
            raise LeafInputError(where, line, "id", f"duplicate prediction for {pid!r}")
        out[pid] = responses
        cuts[pid] = _cuts(row.get("truncated"), len(responses), where, line)
    return out, cuts


def _cuts(value: Any, n: int, where: str, line: int | None) -> list[bool]:
    """A predictions row's ``truncated`` as one bool per response."""
    if value is None:
        return [False] * n
    if isinstance(value, bool):
        return [value] * n
    if isinstance(value, list) and len(value) == n and all(isinstance(v, bool) for v in value):
        return list(value)
    raise LeafInputError(where, line, "truncated",
                         f"must be true/false or a list of {n} true/false (one per response)")


def _name_ids(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def match_predictions(bench: Sequence[dict], predictions: dict[str, list[str]],
                      predictions_path: str | Path) -> None:
    """Raise when a bench id has no prediction or a prediction names no bench id."""
    bench_ids = {s["id"] for s in bench}
    missing = [s["id"] for s in bench if s["id"] not in predictions]
    unknown = [p for p in predictions if p not in bench_ids]
    problems = []
    if unknown:  # named first: an unknown id is often a misspelt one
        problems.append(f"{len(unknown)} prediction id(s) not in the bench: "
                        f"{_name_ids(unknown)}")
    if missing:
        problems.append(f"no prediction for {len(missing)} bench id(s): {_name_ids(missing)}")
    if problems:
        raise LeafError(f"{predictions_path}: {'; '.join(problems)}")


def grade_all(bench: Sequence[dict], predictions: dict[str, list[str]], *,
              truncated: Mapping[str, Sequence[bool]] | None = None,
              workers: int = 4, code_timeout: float = CODE_TIMEOUT,
              progress: bool = True) -> list[dict[str, Any]]:
    """One per-sample row per bench sample, in bench order. ``truncated``: for an id, which
    of its responses were cut at ``max_new_tokens`` (graded wrong, not read)."""
    from tqdm.auto import tqdm  # heavy: tqdm

    jobs = [(i, j) for i, s in enumerate(bench) for j in range(len(predictions[s["id"]]))]
    results: dict[tuple[int, int], dict] = {}
    cut = truncated or {}

    def run(job: tuple[int, int]) -> dict:
        i, j = job
        sid = bench[i]["id"]
        return grade(bench[i], predictions[sid][j], code_timeout=code_timeout,
                     truncated=bool(cut.get(sid) and cut[sid][j]))

    code_jobs = [jb for jb in jobs if bench[jb[0]]["task"] == "code"]
    other_jobs = [jb for jb in jobs if bench[jb[0]]["task"] != "code"]
    bar = tqdm(total=len(jobs), desc="grade", unit="answer", disable=not progress)
    # math_verify's timeouts need the main thread; code runs in subprocesses, so threads help
    for jb in other_jobs:
        results[jb] = run(jb)
        bar.update()
    if code_jobs:
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        futures = [pool.submit(run, jb) for jb in code_jobs]
        try:
            for jb, fut in zip(code_jobs, futures, strict=True):
                results[jb] = fut.result()
                bar.update()
        except BaseException:  # Ctrl-C: drop what has not started, kill what runs
            pool.shutdown(wait=False, cancel_futures=True)
            while not all(f.done() for f in futures):
                kill_running()
                time.sleep(0.05)
            raise
        finally:
            pool.shutdown(wait=True)
    bar.close()

    rows = []
    for i, sample in enumerate(bench):
        per = [results[(i, j)] for j in range(len(predictions[sample["id"]]))]
        row: dict[str, Any] = {"id": sample["id"], "task": sample["task"]}
        if len(per) == 1:
            row.update(per[0])
        else:
            row.update(correct=bool(per[0]["correct"]), n_responses=len(per),
                       n_correct=sum(bool(r["correct"]) for r in per), results=per)
            if any(r.get("truncated") for r in per):
                row["n_truncated"] = sum(bool(r.get("truncated")) for r in per)
        rows.append(row)
    return rows


def samples_path(metrics_path: str | Path) -> Path:
    """``metrics.json`` -> ``metrics.samples.jsonl`` beside it (the per-sample rows)."""
    metrics_path = Path(metrics_path)
    return metrics_path.with_name(metrics_path.stem + ".samples.jsonl")


def summary(metrics: dict[str, Any], cuts: bool = True) -> str:
    """One line: ``n 3: accuracy 0.6667, correct ...; 0 answers cut at max_new_tokens``
    (per task for a mixed bench; ``cuts``: end with the count of cut answers)."""
    keys = [k for k, v in metrics.items() if isinstance(v, float)]
    parts = [f"{k} {metrics[k]:.4f}" for k in keys]
    for task, block in metrics.get("by_task", {}).items():
        parts.append(f"[{task}] " + summary(block, cuts=False))
    return f"n {metrics['n']}: " + ", ".join(parts) + (_cut_note(metrics) if cuts else "")


def _cut_note(metrics: dict[str, Any]) -> str:
    if "truncated" not in metrics:  # a metrics file from before leaf counted them
        return ""
    n = metrics["truncated"]
    return f"; {n} answer{'' if n == 1 else 's'} cut at max_new_tokens (graded wrong)"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _per_response(row: dict) -> list[dict]:
    return row.get("results") or [row]


def truncated_count(rows: Sequence[dict[str, Any]]) -> int:
    """Answers (every response of every row) that were cut at ``max_new_tokens``."""
    return sum(bool(r.get("truncated")) for row in rows for r in _per_response(row))


def aggregate(rows: Sequence[dict[str, Any]], ks: Sequence[int] = (1,)) -> dict[str, Any]:
    """Metrics over per-sample rows (see the module docstring)."""
    tasks = sorted({r["task"] for r in rows})
    if len(tasks) > 1:
        by_task = {t: aggregate([r for r in rows if r["task"] == t], ks) for t in tasks}
        return {"task": "mixed", "n": len(rows), "truncated": truncated_count(rows),
                "by_task": by_task}
    task = tasks[0] if tasks else None
    out: dict[str, Any] = {"task": task, "n": len(rows), "truncated": truncated_count(rows)}
    if task == "math":
        out["accuracy"] = _mean([_mean([float(r["correct"]) for r in _per_response(row)])
                                 for row in rows])
        out["correct"] = sum(bool(r["correct"]) for r in rows)
    elif task == "qa":
        for key in ("em", "f1", "subem"):
            out[key] = _mean([_mean([r[key] for r in _per_response(row)]) for row in rows])
    elif task == "code":
        from leaf.evaluate.code import pass_at_k

        counts = [(len(_per_response(r)), sum(bool(x["correct"]) for x in _per_response(r)))
                  for r in rows]
        least = min(n for n, _ in counts) if counts else 1
        for k in sorted({1, *ks}):
            if k <= least:
                out[f"pass@{k}"] = _mean([pass_at_k(n, c, k) for n, c in counts])
        out["samples_per_problem"] = least
    return out
