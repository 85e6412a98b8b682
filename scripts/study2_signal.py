#!/usr/bin/env python
"""The counterfactual signal of the second study's unverified sets, measured after the fact.

    python scripts/study2_signal.py OUT [--runs pilot-nl00 r1-nl00 ...] [--out ROOT]

``leaf prune --verify`` measures the pre-KD forward KL(teacher || student) on the response
tokens of the kept counterfactuals and of their originals, but only for verified sets. The
study's unverified sets (``grad_t10_unverified``, the ``unverified`` arm; ``planted_all_set``,
the ``planted_all`` arm, "the upper bound of signal") have none. This script measures the same
figures for them, with the same functions (leaf.distill.signal: the pruned rows rendered as
distillation renders them, float32, CPU, one thread, the run's teacher and pre-KD student), and
writes them OUTSIDE the pipeline's outputs:

    ROOT/<run>/extra_signal/<data key>/<set>.signal.json     (ROOT: --out, default OUT)

with each measured row's hash, so a rerun measures only rows that are missing or changed.

Which runs: every folder of OUT named ``pilot-*``, ``r1-*`` or ``r2`` (or those of --runs);
which sets: every counterfactual set of the run's config.json with ``verify: false`` whose prune
stage the run's manifest marks done (a live run's unfinished sets are left for a later call).
A set with more than --max-rows counterfactuals (``planted_all_set`` has one per training row)
is measured on a uniform sample of that many, seeded by the set's name and data key, so every
call draws the same sample; the file says so (``sample``). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from leaf.data.jsonl import read_jsonl  # noqa: E402
from leaf.distill.signal import SignalFigures, measure_pairs, originals_of  # noqa: E402
from leaf.errors import LeafError  # noqa: E402
from leaf.models import quiet_transformers, resolve_model_name  # noqa: E402

RUN_GLOBS = ("pilot-*", "r1-*", "r2")
MAX_ROWS = 2000
EXTRA = "extra_signal"


def say(msg: str) -> None:
    print(f"study2_signal: {msg}", file=sys.stderr, flush=True)


def signal_path(root: Path, run: str, data_key: str, set_name: str) -> Path:
    """Where the figures of one unverified set of one replicate go (``root``: OUT or --out)."""
    return root / run / EXTRA / data_key / f"{set_name}.signal.json"


def find_runs(out: Path, names: list[str] | None) -> list[Path]:
    """The run folders to measure: ``names`` under ``out``, or every study2 run folder."""
    if names:
        return [out / n for n in names]
    found = {p for g in RUN_GLOBS for p in out.glob(g) if (p / "config.json").is_file()}
    return sorted(found)


def unverified_sets(config: dict[str, Any]) -> list[str]:
    """The run's counterfactual sets that are not verified (config.json's ``counterfactuals``)."""
    return [name for name, spec in (config.get("counterfactuals") or {}).items()
            if not (spec or {}).get("verify")]


def data_keys(run: Path) -> list[str]:
    """The run's replicate folders (``data0``, ``data1``, ...)."""
    return sorted(p.name for p in run.glob("data*") if p.is_dir() and p.name[4:].isdigit())


def prune_done(manifest: dict[str, Any] | None, data_key: str, set_name: str) -> bool:
    """Whether the run's manifest marks this set's prune stage done (no manifest: True)."""
    if manifest is None:
        return True
    stage = (manifest.get("stages") or {}).get(f"prune_{data_key}_{set_name}") or {}
    return stage.get("status") == "done"


def sample_seed(set_name: str, data_key: str) -> int:
    """The sample's seed: fixed by the set's name and the data key (not by Python's hash)."""
    return int(hashlib.sha256(f"{set_name}/{data_key}".encode()).hexdigest()[:16], 16)


def draw(counterfactuals: list[dict[str, Any]], cap: int, seed: int) -> list[dict[str, Any]]:
    """At most ``cap`` of ``counterfactuals``, uniformly at random with ``seed``, in file order;
    the same ids for the same rows whatever their order in the file."""
    if len(counterfactuals) <= cap:
        return counterfactuals
    chosen = set(random.Random(seed).sample(sorted(r["id"] for r in counterfactuals), cap))
    return [r for r in counterfactuals if r["id"] in chosen]


def measure_set(prune_file: Path, teacher: str, student: str, path: Path, set_name: str,
                data_key: str, *, cap: int = MAX_ROWS, batch_size: int = 8
                ) -> tuple[SignalFigures | None, str | None, dict[str, Any] | None]:
    """``(figures, why not, sample)`` for one unverified set: every counterfactual distillation
    trains on (``verified`` not false), or a seeded sample of ``cap`` of them, against their
    originals."""
    rows = read_jsonl(prune_file)
    cfs = [r for r in rows if r.get("kind") == "counterfactual" and r.get("verified") is not False]
    if not cfs:
        return None, "no counterfactual in the set", None
    seed = sample_seed(set_name, data_key)
    picked = draw(cfs, cap, seed)
    sample = None if len(picked) == len(cfs) else {
        "sampled": len(picked), "of": len(cfs), "seed": seed,
        "rule": f"uniform without replacement, seeded by '{set_name}/{data_key}'"}
    originals = originals_of(rows, picked)
    extra = {"set": set_name, "data_key": data_key, "source": str(prune_file), "verified": False,
             "sample": sample}
    figures, note = measure_pairs(picked, originals, teacher, student, path, device="cpu",
                                  batch_size=batch_size, extra=extra)
    return figures, note, sample


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def measure_run(run: Path, root: Path, cap: int, batch_size: int) -> int:
    """Measure every finished unverified set of every replicate of ``run``; how many sets."""
    config = _load(run / "config.json")
    if config is None:
        say(f"{run}: no config.json, not a run folder; skipped")
        return 0
    manifest = _load(run / "manifest.json")
    teacher, student = (resolve_model_name(config[role]) for role in ("teacher", "student"))
    done = 0
    for dkey in data_keys(run):
        for name in unverified_sets(config):
            prune_file = run / dkey / "prune" / f"{name}.jsonl"
            where = f"{run.name}/{dkey}/{name}"
            if not prune_file.is_file() or not prune_done(manifest, dkey, name):
                say(f"{where}: not pruned yet; skipped")
                continue
            path = signal_path(root, run.name, dkey, name)
            start = time.monotonic()
            say(f"{where}: measuring the rows not in {path} yet (teacher {teacher}, "
                f"student {student})")
            figures, note, sample = measure_set(prune_file, teacher, student, path, name, dkey,
                                                cap=cap, batch_size=batch_size)
            took = time.monotonic() - start
            if figures is None:
                say(f"{where}: {note}")
                continue
            drawn = f" (sampled {sample['sampled']} of {sample['of']})" if sample else ""
            say(f"{where}{drawn}: {figures} [{took:.1f}s]")
            done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="the second study's OUT (its run folders)")
    parser.add_argument("--runs", nargs="+", help="run folder names (default: pilot-*, r1-*, r2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the signal files under this root instead of OUT "
                             "(same layout: ROOT/<run>/extra_signal/...)")
    parser.add_argument("--max-rows", type=int, default=MAX_ROWS,
                        help=f"measure at most this many counterfactuals per set and replicate, "
                             f"a seeded uniform sample (default {MAX_ROWS})")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    if not args.study.is_dir():
        print(f"study2_signal: {args.study}: no such folder", file=sys.stderr)
        return 2
    if args.max_rows < 1:
        print(f"study2_signal: --max-rows {args.max_rows}: must be at least 1", file=sys.stderr)
        return 2
    runs = find_runs(args.study, args.runs)
    absent = [r.name for r in runs if not r.is_dir()]
    if absent:
        print(f"study2_signal: no run folder {', '.join(absent)} in {args.study}",
              file=sys.stderr)
        return 2
    import torch  # heavy: one CPU thread, as the study's runs use

    torch.set_num_threads(1)
    quiet_transformers()
    root = args.out or args.study
    try:
        total = sum(measure_run(run, root, args.max_rows, args.batch_size) for run in runs)
    except LeafError as exc:
        print(f"study2_signal: {exc}", file=sys.stderr)
        return 1
    say(f"{total} set(s) measured or read from their files under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
