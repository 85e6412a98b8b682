"""Data-parallel detection: `leaf detect` on 2 processes against 1, same data, same machine.

Both sides run the real command on the same teacher, student and samples, from a cold start
(a fresh Python process, models loaded, output written and, for 2 processes, merged):

- **dp1**: ``python -m leaf.cli detect ...``, one process, ``OMP_NUM_THREADS = T`` threads;
- **dp2**: ``torchrun --nproc_per_node 2 -m leaf.cli detect ...``, two processes of ``T / 2``
  threads each (with ``--device cuda``: one process on the GPU against two ranks, each with
  its own GPU when there are two; both share one GPU otherwise);
- **dp1_1thread** (a control): one process of ``T / 2`` threads, what each rank of dp2 gets.

Samples/s is the number of samples over the command's wall time, start-up included (Python,
torch and the two model loads: paid once per process, so it weighs more on short runs).
Before any timing both sides' outputs are checked to be the same bytes. The sides alternate
(dp1 dp2, dp2 dp1, ...) so load from other processes hits both; each repetition gives a ratio.

The teacher and student are randomly initialised Llama-architecture models with leaf's tiny
test tokenizer (sizes below), saved to a temporary directory; the samples are random word
sequences from that tokenizer's corpus.

Run: ``python benchmarks/bench_dp.py [--quick] [--device cuda] [--json FILE]``. The last
line is ``RATIO dp2_over_dp1=<samples/s with 2 processes / with 1> dp2_over_dp1_1thread=<...>``. Only ``--json`` writes a
file outside the temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

QUICK = dict(samples=16, words=(40, 60), teacher=(128, 3), student=(64, 2), reps=2, threads=2)
FULL = dict(samples=48, words=(80, 120), teacher=(256, 4), student=(128, 2), reps=3,
            threads=2)
# for GPUs: larger models, more samples (the GPU runs batch 4, the leaf detect default there)
GPU = dict(samples=512, words=(200, 300), teacher=(1024, 12), student=(512, 6), reps=3,
           threads=4)


def make_models(root: Path, cfg: dict) -> tuple[Path, Path]:
    from leaf.testbed.tiny import save_tiny

    (th, tl), (sh, sl) = cfg["teacher"], cfg["student"]
    teacher = save_tiny(root / "teacher", hidden=th, layers=tl, heads=8, kv_heads=4,
                        max_positions=2048, seed=1)
    student = save_tiny(root / "student", hidden=sh, layers=sl, heads=4, kv_heads=2,
                        max_positions=2048, seed=2)
    return teacher, student


def make_data(path: Path, cfg: dict, seed: int = 0) -> None:
    from leaf.testbed.tiny import DEFAULT_CORPUS

    words = sorted({w for line in DEFAULT_CORPUS for w in line.split()})
    rng = random.Random(seed)
    lo, hi = cfg["words"]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(cfg["samples"]):
            inst = " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))
            resp = " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))
            fh.write(json.dumps({"id": f"s{i}", "task": "qa", "instruction": inst,
                                 "response": resp, "answer": "x"}) + "\n")


def command(side: str, teacher: Path, student: Path, data: Path, out: Path,
            device: str) -> list[str]:
    args = ["-m", "leaf.cli", "detect", "--teacher", str(teacher), "--student", str(student),
            "--data", str(data), "--out", str(out), "--device", device]
    if side != "dp2":
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", "2", *args]


def run_side(side: str, cfg: dict, paths: tuple, out: Path, device: str) -> float:
    """Wall seconds of one cold run of ``side`` (its output removed first)."""
    for p in out.parent.glob(out.name + "*"):
        p.unlink()
    threads = cfg["threads"] if side == "dp1" else max(cfg["threads"] // 2, 1)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join([str(C.ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run(command(side, *paths, out, device), env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return wall


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small settings, about two minutes")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--reps", type=int, help="timed repetitions per side")
    p.add_argument("--samples", type=int)
    p.add_argument("--threads", type=int,
                   help="threads of the one process (each of the 2 gets half; default 2)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    cfg = dict(QUICK if args.quick else GPU if args.device == "cuda" else FULL)
    for key in ("reps", "samples", "threads"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)

    with tempfile.TemporaryDirectory(prefix="leaf-bench-dp-") as tmp:
        root = Path(tmp)
        teacher, student = make_models(root, cfg)
        data = root / "samples.jsonl"
        make_data(data, cfg)
        paths = (teacher, student, data)
        sides = ("dp1", "dp2", "dp1_1thread")
        outs = {s: root / f"{s}.jsonl" for s in sides}
        # the same bytes first (also the warm-up: files cached, kernels compiled)
        for side in sides:
            run_side(side, cfg, paths, outs[side], args.device)
        same = len({outs[s].read_bytes() for s in sides}) == 1
        assert same, "2 processes wrote other bytes than 1"
        n_rows = outs["dp1"].read_bytes().count(b"\n")
        times: dict[str, list[float]] = {s: [] for s in sides}
        for r in range(cfg["reps"]):
            for side in sides if r % 2 == 0 else sides[::-1]:
                times[side].append(run_side(side, cfg, paths, outs[side], args.device))
                print(f"rep {r} {side}: {times[side][-1]:.1f} s", flush=True)

    n = cfg["samples"]
    rate = {s: C.summary([n / t for t in ts]) for s, ts in times.items()}
    ratio = C.summary(C.ratios(times["dp1"], times["dp2"]))  # = rate dp2 / rate dp1
    ratio_1 = C.summary(C.ratios(times["dp1_1thread"], times["dp2"]))
    machine = C.machine_info(args.device, cfg["threads"])
    print(f"machine: {machine}")
    print(f"{n} samples, {n_rows} score rows, same bytes from both sides: {same}")
    half = max(cfg["threads"] // 2, 1)
    for side, label in (("dp1", f"1 process x {cfg['threads']} threads"),
                        ("dp2", f"2 processes x {half} thread(s)"),
                        ("dp1_1thread", f"1 process x {half} thread(s)")):
        print(f"{side} ({label}): {C.fmt(C.summary(times[side]))} s, "
              f"{C.fmt(rate[side])} samples/s")
    print(f"samples/s, 2 processes / 1: {C.fmt(ratio)}; 2 processes / 1 process of "
          f"{half} thread(s): {C.fmt(ratio_1)}")
    if args.json:
        result = {
            "command": "python benchmarks/bench_dp.py" + (" --quick" if args.quick else "")
                       + (f" --device {args.device}" if args.device != "cpu" else ""),
            "machine": machine, "config": {**cfg, "rows": n_rows},
            "time_s": {s: C.summary(ts) for s, ts in times.items()},
            "samples_per_s": rate, "dp2_over_dp1": ratio, "dp2_over_dp1_1thread": ratio_1,
            "same_bytes": same,
        }
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(C.ratio_line({"dp2_over_dp1": ratio["median"],
                        "dp2_over_dp1_1thread": ratio_1["median"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
