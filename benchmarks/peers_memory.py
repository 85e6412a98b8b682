"""The results file of ``bench_kl.py --peers --memory-only``: peak memory only, built up over
several commands.

At 8192 x 152064 one call of one side takes over 20 minutes on these CPUs, so the shape is run
as several commands (one per side and dtype, each well under two hours) that all add to one
JSON file with ``--append FILE``. The file holds one *entry* per (shape, dtype, side): the peak
memory, loss and gradient norms of each repetition's fresh child (and its wall time, recorded
but never compared: the sides run at different times under different loads). A rerun skips the
repetitions an entry already holds, so a command cut short resumes where it stopped; a file
written by another leaf commit or with other settings is refused, since its entries would not
be comparable with this run's.

The pure functions here (no torch) are shared by the benchmark and by
``make_performance.py``, which renders the file in section 6 of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

NAME = "peers_memory"  # benchmarks/results/<NAME>.json
SHAPE = (8192, 152064, 2048)
# the commands that produce the tracked file: one per side and dtype (each under two hours on
# 2 cores), every one with the same settings so that they append to one file
FILE = f"benchmarks/results/{NAME}.json"
PLAN = [f"python benchmarks/bench_kl.py --peers --memory-only --threads 2 --sizes "
        f"{'x'.join(map(str, SHAPE))} --dtype {dtype} --sides {side} --append {FILE}"
        for dtype in ("float32", "bfloat16") for side in ("leaf", "liger")]
# the side names of --sides (leaf's side is the fused loss)
SIDE_NAMES = {"leaf": "fused", "fused": "fused", "liger": "liger"}
# largest relative difference of a peer's loss and gradient norms from leaf's
LIMIT = {"float32": 1e-4, "bfloat16": 3e-2}
# the files whose content is what is measured (the "leaf commit" of a row)
CODE = ("src", "benchmarks/bench_kl.py", "benchmarks/_common.py", "benchmarks/peers_memory.py")


def code_version(root: Path) -> str:
    """The last commit that changed the measured code (leaf's sources and this benchmark), with
    ``+dirty.<hash of the diff>`` when those files have uncommitted changes; ``unknown`` outside
    a git checkout. A merge of documentation alone leaves it unchanged."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True).stdout

    try:
        commit = git("log", "-1", "--format=%H", "--", *CODE).strip()
        diff = git("diff", "HEAD", "--", *CODE)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if diff:
        commit += "+dirty." + hashlib.sha1(diff.encode()).hexdigest()[:12]
    return commit or "unknown"


def new(settings: dict) -> dict:
    return {"name": NAME, "settings": settings, "commands": [], "checks": {}, "entries": []}


def refuse_mismatch(path: Path, old: dict, settings: dict) -> None:
    """Exit with one message when ``old`` (read from ``path``) was written with other settings."""
    theirs = old.get("settings", {})
    differ = sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))
    if differ:
        what = "; ".join(f"{k}: file {theirs.get(k)!r}, this run {settings.get(k)!r}"
                         for k in differ)
        raise SystemExit(f"{path}: refusing to append: its rows come from different settings "
                         f"({what}). Run with the file's settings, or write a new file.")


def load(path: Path, settings: dict) -> dict:
    """The results in ``path`` to append to (a new, empty set when it does not exist); exits
    with one clear message when the file cannot be read or holds other settings."""
    if not path.exists():
        return new(settings)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot append: not a results file ({e})") from None
    if old.get("name") != NAME:
        raise SystemExit(f"{path}: cannot append: it holds {old.get('name')!r} results, not "
                         f"{NAME!r} (bench_kl.py --peers --memory-only)")
    refuse_mismatch(path, old, settings)
    return old


def key(e: dict) -> tuple:
    return (e["tokens"], e["vocab"], e["hidden"], e["dtype"], e["side"])


def entry(data: dict, tokens: int, vocab: int, hidden: int, dtype: str, side: str) -> dict:
    """The entry of (shape, dtype, side) in ``data``, added empty when absent."""
    k = (tokens, vocab, hidden, dtype, side)
    for e in data["entries"]:
        if key(e) == k:
            return e
    e = {"tokens": tokens, "vocab": vocab, "hidden": hidden, "dtype": dtype, "side": side,
         "peak_mib": [], "time_s": [], "loss": [], "grad_norms": [], "load_1min": [],
         "mode": [], "date_utc": [], "mem_method": ""}
    data["entries"].append(e)
    return e


def merge(old: dict, new_: dict) -> dict:
    """``old`` (the file as it is now) with ``new_``'s entries, commands and checks: an entry in
    both keeps the one with more repetitions (another command may have written the file since
    this one read it)."""
    out = json.loads(json.dumps(old))
    have = {key(e): i for i, e in enumerate(out["entries"])}
    for e in new_["entries"]:
        i = have.get(key(e))
        if i is None:
            out["entries"].append(e)
        elif len(e["peak_mib"]) >= len(out["entries"][i]["peak_mib"]):
            out["entries"][i] = e
    out["commands"] += [c for c in new_["commands"] if c not in out["commands"]]
    for dtype, worst in new_["checks"].items():
        out["checks"][dtype] = max(worst, out["checks"].get(dtype, 0.0))
    for field in ("machine",):
        if field in new_:
            out[field] = new_[field]
    return out


def save(path: Path, data: dict) -> None:
    """Write ``data`` to ``path``, merged into what the file holds now (re-read, settings
    checked), through a temporary file and a rename so that a reader never sees half a file."""
    if path.exists():
        data = merge(load(path, data["settings"]), data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# Peaks under this many MiB are not resolved on the CPU: blocks below glibc's mmap threshold
# (128 KiB in the children) come from the heap, which keeps freed memory resident, so a small
# shape can read 0 MiB. A row with such a peak gets no ratio.
RESOLVED_MIB = 1.0


def rows(data: dict, peers: tuple[str, ...] = ("liger",)) -> list[dict]:
    """One row per (shape, dtype) that holds leaf's side and at least one peer: peak memory of
    each side (median, min, max over its repetitions), leaf / best peer per repetition, and the
    largest relative difference of any peer call's loss or gradient norm from leaf's first.
    ``mem_over_best_peer`` is None when a peak is below :data:`RESOLVED_MIB` (``unresolved``
    then says which)."""
    from statistics import median

    def summary(xs: list[float]) -> dict:
        return {"median": median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}

    by: dict[tuple, dict[str, dict]] = {}
    for e in data["entries"]:
        if e["peak_mib"]:
            by.setdefault(key(e)[:4], {})[e["side"]] = e
    out = []
    for (tokens, vocab, hidden, dtype), sides in sorted(
            by.items(), key=lambda kv: (kv[0][0] * kv[0][1], kv[0][3] != "float32")):
        there = [p for p in peers if p in sides]
        if "fused" not in sides or not there:
            continue
        leaf = sides["fused"]
        n = min(len(leaf["peak_mib"]), *(len(sides[p]["peak_mib"]) for p in there))
        best = [min(sides[p]["peak_mib"][i] for p in there) for i in range(n)]
        low = [f"{'leaf' if s == 'fused' else s} {v:.2f} MiB" for s in ("fused", *there)
               for v in sides[s]["peak_mib"][:n] if v < RESOLVED_MIB]
        ref_loss, ref_norms = leaf["loss"][0], leaf["grad_norms"][0]
        diffs = [abs(v - ref_loss) / abs(ref_loss) for p in there for v in sides[p]["loss"]]
        diffs += [abs(a - b) / b for p in there for g in sides[p]["grad_norms"]
                  for a, b in zip(g, ref_norms)]
        loads = [x for s in (leaf, *(sides[p] for p in there)) for x in s["load_1min"]]
        out.append({
            "tokens": tokens, "vocab": vocab, "hidden": hidden, "dtype": dtype,
            "peak_mib": {s: summary(sides[s]["peak_mib"]) for s in ("fused", *there)},
            "mem_over_best_peer": None if low else summary(
                [a / b for a, b in zip(leaf["peak_mib"][:n], best)]),
            "unresolved": low,
            "max_rel_diff": max(diffs), "limit": LIMIT.get(dtype, 3e-2),
            "modes": sorted({m for p in there for m in sides[p]["mode"] if m}),
            "load_1min": [min(loads), max(loads)],
            "call_s": [min(t for s in sides.values() for t in s["time_s"]),
                       max(t for s in sides.values() for t in s["time_s"])],
            "mem_method": leaf["mem_method"],
        })
    return out
