"""Compare two ``leaf run`` directories made from the same config by two versions of leaf.

Every JSONL file (screen, detect scores, counterfactuals, training rows, predictions, graded
samples) must be byte-identical; every other JSON file (metrics, detection, attention,
results.json) identical once the fields that may differ are set aside: wall-clock times
(``timings``, ``total_seconds``) and, in ``results.json``, the echoed distillation arguments
(``distill``) and ``config_path``; paths into a checkout's ``src/leaf/`` are compared from
there on, and paths inside each run directory from the run directory on, so two checkouts
and two run directories can be compared. Distilled model weights are compared by their
``model.safetensors`` bytes. Prints one line per difference and exits 1 if there is any.

    python scripts/compare_runs.py BEFORE_RUN_DIR AFTER_RUN_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

IGNORED_EVERYWHERE = {"timings", "total_seconds", "seconds", "wall_s"}
IGNORED_IN_RESULTS = {"distill", "config_path"}
SKIPPED_NAMES = {".lock", "stages.log", "manifest.json", "config.json", "trainer_state.json",
                 "training_args.bin", "README.md", "counterfactual_usage.json"}


def _strip(obj, top: bool, results: bool, run_dir: str):
    if isinstance(obj, dict):
        drop = IGNORED_EVERYWHERE | (IGNORED_IN_RESULTS if top and results else set())
        return {k: _strip(v, False, results, run_dir) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_strip(v, False, results, run_dir) for v in obj]
    if isinstance(obj, str) and "/src/leaf/" in obj:  # a checkout's path to the package
        return "<leaf>/" + obj.split("/src/leaf/", 1)[1]
    if isinstance(obj, str) and obj.startswith(run_dir):  # a path inside the run itself
        return "<run>" + obj[len(run_dir):]
    return obj


def _diff(a, b, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'after' if k in b else 'before'}")
            else:
                _diff(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{where}[{i}]", out)
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):
        out.append(f"{where}: {str(a)[:80]} != {str(b)[:80]}")


def compare(before: Path, after: Path) -> list[str]:
    problems: list[str] = []
    files = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    files |= {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    checked = 0
    for rel in sorted(files):
        if rel.name in SKIPPED_NAMES or "checkpoint-" in str(rel):
            continue
        a, b = before / rel, after / rel
        if rel.suffix not in (".jsonl", ".json", ".safetensors"):
            continue
        if not a.exists() or not b.exists():
            problems.append(f"{rel}: only in {'after' if b.exists() else 'before'}")
            continue
        checked += 1
        if rel.suffix == ".json":
            results = rel.name == "results.json"
            ja = _strip(json.loads(a.read_text(encoding="utf-8")), True, results,
                        str(before.resolve()))
            jb = _strip(json.loads(b.read_text(encoding="utf-8")), True, results,
                        str(after.resolve()))
            found: list[str] = []
            _diff(ja, jb, str(rel), found)
            problems += found
        elif a.read_bytes() != b.read_bytes():
            problems.append(f"{rel}: bytes differ")
    print(f"compared {checked} files under {before} and {after}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    problems = compare(Path(argv[0]), Path(argv[1]))
    for line in problems:
        print(line)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
