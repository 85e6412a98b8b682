"""The distillation loss from hidden states: leaf's fused loss vs the obvious one vs chunked logits.

Every side starts from the same inputs, the student's final hidden states ``h`` ``[T, H]`` (with
gradient) and output weight ``W`` ``[V, H]`` (with gradient), the teacher's final hidden states
and output weight (frozen), and computes ``sum_i KL(p_T(.|i) || p_S(.|i))`` over every position
(all positions are response tokens) and its gradient with respect to ``h`` and ``W``:

- **obvious**: both models' logits ``[T, V]`` (``F.linear``), then
  :func:`leaf.distill.losses.token_divergence` over all positions at once, summed, backward.
- **chunked** (leaf's previous path, ``kd_loss_path: logits``): the same two logits tensors, then
  :func:`leaf.distill.losses.chunked_divergence` in chunks of 256 positions, backward.
- **fused** (``kd_loss_path: hidden``, the trainer's default where the model allows it):
  :func:`leaf.distill.fused.fused_distill_loss`: 256 positions at a time through both output
  layers, the divergence and its gradient in closed form; no ``[T, V]`` tensor.

Each (shape, side) runs in a fresh child process: peak memory above the inputs (the weight's
gradient, as large as ``W``, is included on every side, as training needs it) and wall time of
the loss plus backward. The parent first checks, at a small shape, that the three sides give the
same loss and gradients; every child reports its loss and gradient norms, compared across sides.
The teacher's weight is a second reference to the student's (same values, same computation;
one fewer ``[V, H]`` input tensor on a 24 GiB machine).

A second part measures one whole training step (student forward, teacher forward, loss,
backward; ``Trainer.training_step``) of a small Llama-shaped student with a 128256-token
vocabulary: leaf's ``DistillTrainer`` on each ``kd_loss_path``, and a textbook KD ``Trainer``
with the obvious loss.

Run: ``python benchmarks/bench_kl.py [--quick] [--device cuda]``.

``--peers`` puts leaf's fused loss beside Liger-Kernel's chunked loss (timed and measured, at
least 3 interleaved repetitions). ``--peers --memory-only`` measures peak memory alone, for a
shape whose calls are too slow to time on a CPU (8192 x 152064: over 20 minutes a call): each
side and dtype once per repetition in its fresh child, after the same equality check at the
small shape. Such a shape runs as several commands of under two hours, one per side and dtype,
all adding to one file (``--append FILE`` skips what the file already holds, so a rerun resumes,
and refuses a file from another leaf commit or other settings; see ``peers_memory.py``)::

    python benchmarks/bench_kl.py --peers --memory-only --threads 2 --sizes 8192x152064x2048 \
        --dtype float32 --sides leaf --append benchmarks/results/peers_memory.json
    # ... the same with --sides liger, then both again with --dtype bfloat16
    python benchmarks/make_performance.py --write --render-only   # section 6 shows them
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import _common as C
import peers_memory as PM

CHUNK = 256  # the trainer's default (DistillArguments.kd_chunk_size)
SIDES = ("obvious", "chunked", "fused")
# (tokens, vocab, hidden, sides); the obvious loss is left out where it cannot fit in 24 GiB
# the order they run in: the headline shape first, the longest run last (a run cut short still
# leaves the results written so far in --json)
FULL = dict(sizes=[(4096, 128256, 2048, SIDES), (2048, 128256, 2048, SIDES), "step",
                   (8192, 152064, 2048, ("chunked", "fused"))], reps=1,
            step=dict(vocab=128256, student=(256, 2, 4, 688), teacher=(512, 2, 8, 1376),
                      tokens=2048))
QUICK = dict(sizes=[(512, 16000, 256, SIDES), (1024, 32000, 256, SIDES), "step"], reps=2,
             step=dict(vocab=32000, student=(64, 2, 4, 192), teacher=(128, 2, 4, 384),
                       tokens=512))
CHECK = (192, 3000, 96)  # the parent's exact comparison of all gradients
# bytes per [tokens, vocab] float32 tensor that each side's peak holds at most (measured
# ratios, rounded up), to skip a case the machine's free memory cannot hold
NEED = {"obvious": 8.5, "chunked": 3.3, "fused": 0.2}


def make_inputs(tokens, vocab, hidden, device, dtype, seed=0):
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=g).to(device, dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).to(device, dtype).requires_grad_()
    ht = (1.5 * torch.randn(tokens, hidden, generator=g)).to(device, dtype)
    groups = torch.zeros(tokens, dtype=torch.long, device=device)
    return h, w, ht, w.detach(), groups


def obvious(h, w, ht, wt, groups):
    import torch
    import torch.nn.functional as F

    from leaf.distill.losses import token_divergence

    z = F.linear(h, w)
    with torch.no_grad():
        zt = F.linear(ht, wt)
    loss = (token_divergence(z, zt) * (groups >= 0)).sum()
    loss.backward()
    return loss.detach()


def chunked(h, w, ht, wt, groups):
    import torch
    import torch.nn.functional as F

    from leaf.distill.losses import chunked_divergence

    z = F.linear(h, w)
    with torch.no_grad():
        zt = F.linear(ht, wt)
    loss = chunked_divergence(z, zt, groups, num_groups=1, chunk_size=CHUNK).sum()
    loss.backward()
    return loss.detach()


def fused(h, w, ht, wt, groups):
    import torch

    from leaf.distill.fused import fused_distill_loss, teacher_from_hidden

    head = torch.nn.Linear(wt.shape[1], wt.shape[0], bias=False, device="meta")
    head.weight = torch.nn.Parameter(wt, requires_grad=False)
    out = fused_distill_loss(h, w, groups, torch.ones(1, device=h.device),
                             teacher=teacher_from_hidden(ht, head), num_groups=1,
                             chunk_size=CHUNK)
    out.loss.backward()
    return out.loss.detach()


LIGER = {"compiled": True, "mode": "compiled (torch.compile)"}


def liger(h, w, ht, wt, groups):
    """Liger-Kernel's chunked fused-linear JSD loss with beta 0 (its forward KL, teacher to
    student), hard-loss weight 0, the same target positions (label -100 elsewhere), temperature
    1 and chunks of the same 256 positions; Liger divides by the number of target positions, so
    its mean is multiplied back to the sum the other sides compute (one scalar product)."""
    import torch
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

    labels = torch.where(groups >= 0, torch.zeros_like(groups), torch.full_like(groups, -100))
    loss_fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.0,
                                      temperature=1.0, compiled=LIGER["compiled"],
                                      chunk_size=CHUNK)
    loss = loss_fn(h, w, ht, wt, labels) * (labels != -100).sum()
    loss.backward()
    return loss.detach()


def peer_warmup(side: str, torch, device, dtype, vocab: int, hidden: int) -> None:
    """Two calls at the measured vocabulary and hidden size, one and two chunks long, before the
    measured call, on every side of ``--peers``: compiled code is then built for the chunk shape
    and made dynamic in the number of chunks (a first call at a new length recompiles), so no
    timed call compiles. Where compiling Liger fails, it runs eager and says why."""
    for tokens in (CHUNK, 2 * CHUNK):
        try:
            FNS[side](*make_inputs(tokens, vocab, hidden, device, dtype))
        except Exception as e:  # noqa: BLE001 (any compiler failure: report it, run eager)
            if side != "liger" or not LIGER["compiled"]:
                raise
            LIGER.update(compiled=False, mode="eager (torch.compile failed: "
                         f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]})")
            FNS[side](*make_inputs(tokens, vocab, hidden, device, dtype))


FNS = {"obvious": obvious, "chunked": chunked, "fused": fused, "liger": liger}
# peers that cannot run beside leaf's loss here, and why
PEERS_NOT_RUN = {
    "TRL (GKDTrainer / generalized_jsd_loss)":
        "its loss takes the two models' full logits ([batch, T, V]), not hidden states: it is "
        "the obvious loss's path (section 2 measures that); with use_liger_kernel TRL calls "
        "Liger's LigerFusedLinearJSDLoss, the Liger side here",
}


# ---------------------------------------------------------------- a whole training step


def step_child(args, cfg) -> None:
    """One ``training_step`` of a Llama-shaped student on one row, in this process."""
    import logging
    import tempfile
    import time

    import transformers
    from bench_distill import plain_kd_trainer_class

    from leaf.distill.config import DistillArguments
    from leaf.distill.data import DistillCollator
    from leaf.distill.trainer import DistillTrainer

    torch, device = C.setup_torch(args.threads, args.device)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    transformers.utils.logging.set_verbosity_error()
    s = cfg["step"]
    student = C.llama(s["vocab"], *s["student"], seed=0).to(device)
    teacher = C.llama(s["vocab"], *s["teacher"], seed=1).to(device)
    g = torch.Generator().manual_seed(3)

    def row(n):
        ids = torch.randint(3, s["vocab"], (n,), generator=g).tolist()
        return {"input_ids": ids, "labels": [-100] * (n // 4) + ids[n // 4:],
                "is_counterfactual": 0}

    rows = [row(s["tokens"])]
    with tempfile.TemporaryDirectory() as out:
        targs = DistillArguments(output_dir=out, per_device_train_batch_size=1, max_steps=1,
                                 report_to="none", disable_tqdm=True, use_cpu=args.device == "cpu",
                                 kd_loss_path="logits" if args.child == "chunked" else "hidden",
                                 remove_unused_columns=False)
        cls = plain_kd_trainer_class() if args.child == "obvious" else DistillTrainer
        trainer = cls(model=student, args=targs, train_dataset=rows, teacher=teacher,
                      data_collator=DistillCollator(0))
        if args.child != "obvious":
            assert trainer.loss_path == ("logits" if args.child == "chunked" else "hidden")
        collate = trainer.data_collator
        trainer.current_gradient_accumulation_steps = 1  # set by train() otherwise
        student.train()
        trainer.training_step(student, collate([row(64)]))  # lazy initialisations
        student.zero_grad(set_to_none=True)
        batch = collate(rows)
        with C.PeakMemory(device) as peak:
            C.sync(device)
            t0 = time.perf_counter()
            loss = trainer.training_step(student, batch)
            C.sync(device)
            took = time.perf_counter() - t0
    C.child_report(peak, side=args.child, loss=float(loss), time_s=took,
                   student_params=C.n_params(student), teacher_params=C.n_params(teacher))


# ---------------------------------------------------------------- the loss alone


def loss_child(args, cfg) -> None:
    import time

    torch, device = C.setup_torch(args.threads, args.device)
    dtype = getattr(torch, args.dtype)
    fn = FNS[args.child]
    if args.peers:
        LIGER["compiled"] = not args.eager
        peer_warmup(args.child, torch, device, dtype, args.vocab, args.hidden)
    else:
        fn(*make_inputs(8, 64, 16, device, dtype))  # lazy initialisations
    h, w, ht, wt, groups = make_inputs(args.tokens, args.vocab, args.hidden, device, dtype)
    times = []
    with C.PeakMemory(device) as peak:
        C.sync(device)
        t0 = time.perf_counter()
        loss = fn(h, w, ht, wt, groups)
        C.sync(device)
        times.append(time.perf_counter() - t0)
    norms = [float(h.grad.norm()), float(w.grad.norm())]
    for _ in range(cfg["reps"] - 1):
        h.grad = w.grad = None
        C.sync(device)
        t0 = time.perf_counter()
        fn(h, w, ht, wt, groups)
        C.sync(device)
        times.append(time.perf_counter() - t0)
    C.child_report(peak, side=args.child, loss=float(loss), grad_norms=norms, times=times,
                   mode=LIGER["mode"] if args.child == "liger" else "")


def check_small(device, dtype, torch) -> float:
    """Largest relative difference of loss and gradients between the sides at a small shape."""
    worst = 0.0
    ref = None
    for side in SIDES:
        h, w, ht, wt, groups = make_inputs(*CHECK, device, dtype)
        loss = FNS[side](h, w, ht, wt, groups)
        got = [loss, h.grad, w.grad]
        if ref is None:
            ref = got
            continue
        for a, b in zip(got, ref):
            worst = max(worst, float((a - b).norm() / b.norm()))
    limit = 1e-5 if dtype == torch.float32 else 2e-2
    assert worst <= limit, f"the sides disagree: relative difference {worst:.1e}"
    return worst


def finish_row(row: dict) -> None:
    """The row's cross-side checks and ratios, from whatever sides it holds."""
    tokens, vocab = row["tokens"], row["vocab"]
    ref = row["loss"].get("chunked", next(iter(row["loss"].values()), None))
    ref_norms = row["grad_norms"].get("chunked", next(iter(row["grad_norms"].values()), None))
    row["max_rel_diff"] = max(
        [abs(v - ref) / abs(ref) for v in row["loss"].values()]
        + [abs(a - b) / b for n in row["grad_norms"].values() for a, b in zip(n, ref_norms)],
        default=0.0)
    assert row["max_rel_diff"] < 1e-4, f"the sides disagree at {tokens} x {vocab}: {row}"
    for side in ("chunked", "fused"):
        if "obvious" in row["peak_mib"] and side in row["peak_mib"]:
            row[f"{side}_mem_ratio"] = row["peak_mib"][side] / row["peak_mib"]["obvious"]
            row[f"{side}_time_ratio"] = (row["time_s"][side]["median"]
                                         / row["time_s"]["obvious"]["median"])
    if "chunked" in row["peak_mib"] and "fused" in row["peak_mib"]:
        row["fused_over_chunked_mem"] = row["peak_mib"]["fused"] / row["peak_mib"]["chunked"]
        row["fused_over_chunked_time"] = (row["time_s"]["fused"]["median"]
                                          / row["time_s"]["chunked"]["median"])


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows of two runs (e.g. sides of one shape run in separate invocations), joined by shape."""
    out = {(r["tokens"], r["vocab"], r["hidden"]): r for r in old}
    for r in new:
        key = (r["tokens"], r["vocab"], r["hidden"])
        if key not in out:
            out[key] = r
            continue
        row = out[key]
        for field in ("peak_mib", "time_s", "loss", "grad_norms"):
            row[field].update(r[field])
        row["not_run"] = {k: v for k, v in {**row["not_run"], **r["not_run"]}.items()
                          if k not in row["peak_mib"]}
        row["mem_method"] = r.get("mem_method", row.get("mem_method"))
        finish_row(row)
    return list(out.values())


def run_loss(here, base, size, k, device, bits) -> dict:
    """One shape: each side in its own child process; returns the table row."""
    tokens, vocab, hidden, sides = size
    tensor = tokens * vocab * 4
    row = {"tokens": tokens, "vocab": vocab, "hidden": hidden,
           "logits_mib": C.mib(tokens * vocab * bits / 8),
           "peak_mib": {}, "time_s": {}, "loss": {}, "grad_norms": {}, "not_run": {}}
    for side in (SIDES if k % 2 == 0 else SIDES[::-1]):
        if side not in sides:
            if side == "obvious":
                row["not_run"][side] = "does not fit in 24 GiB"
            continue
        free = available_bytes() if device == "cpu" else None
        need = NEED[side] * tensor + 2 * vocab * hidden * 4 + 2**29
        if free is not None and need > free - 2**30:
            row["not_run"][side] = (f"needs about {need / 2**30:.0f} GiB, "
                                    f"{free / 2**30:.0f} GiB were free")
            continue
        res = C.run_child(here, ["--child", side, "--tokens", str(tokens), "--vocab",
                                 str(vocab), "--hidden", str(hidden), *base], timeout=7200)
        row["peak_mib"][side] = C.mib(res["peak_bytes"])
        row["time_s"][side] = C.summary(res["times"])
        row["loss"][side] = res["loss"]
        row["grad_norms"][side] = res["grad_norms"]
        row["mem_method"] = res["method"]
    finish_row(row)
    print(f"T={tokens} V={vocab} H={hidden} (one [T, V] float32 tensor "
          f"{C.mib(tensor):.0f} MiB): peak MiB / time s: " + "; ".join(
              f"{s} {row['peak_mib'][s]:.0f} / {C.fmt(row['time_s'][s])}"
              for s in SIDES if s in row["peak_mib"])
          + "".join(f"; {s} not run ({why})" for s, why in row["not_run"].items())
          + "".join(f"; {s} / obvious: memory {row[f'{s}_mem_ratio']:.3f}, time "
                    f"{row[f'{s}_time_ratio']:.3f}" for s in ("chunked", "fused")
                    if f"{s}_mem_ratio" in row), flush=True)
    return row


def run_step(here, base, cfg, step) -> None:
    """The whole-training-step part: each side in its own child; fills ``step``."""
    s = cfg["step"]
    for side in SIDES:
        res = C.run_child(here, ["--child", side, "--step", *base], timeout=7200)
        step[side] = {"peak_mib": C.mib(res["peak_bytes"]), "time_s": res["time_s"],
                      "loss": res["loss"], "student_params": res["student_params"],
                      "teacher_params": res["teacher_params"], "method": res["method"]}
    print(f"training step, student hidden {s['student'][0]} x {s['student'][1]} layers "
          f"({step['fused']['student_params'] / 1e6:.0f}M parameters), teacher "
          f"{step['fused']['teacher_params'] / 1e6:.0f}M, vocabulary {s['vocab']}, one row of "
          f"{s['tokens']} tokens: peak MiB " + "; ".join(
              f"{k} {v['peak_mib']:.0f} ({v['time_s']:.1f} s)" for k, v in step.items()),
          flush=True)
    losses = [v["loss"] for v in step.values()]
    assert max(losses) - min(losses) <= 1e-4 * max(losses), losses


# ---------------------------------------------------------------- peers (--peers)

PEER_SIZES = {"quick": [(1024, 32000, 256)], "full": [(4096, 128256, 2048)],
              "memory": [PM.SHAPE]}  # --memory-only (one call takes over 20 minutes)
PEER_SIDES = ("fused", "liger")  # leaf's side first; every other one is a peer


def check_peers(device, torch, dtype, eager: bool) -> float:
    """Largest relative difference of loss and both gradients between the obvious loss, leaf's
    fused loss and the peers at the small shape (before anything is timed)."""
    LIGER["compiled"] = not eager
    peer_warmup("liger", torch, device, dtype, CHECK[1], CHECK[2])
    worst, ref = 0.0, None
    for side in ("obvious", *PEER_SIDES):
        h, w, ht, wt, groups = make_inputs(*CHECK, device, dtype)
        got = [FNS[side](h, w, ht, wt, groups).float(), h.grad.float(), w.grad.float()]
        if ref is None:
            ref = got
            continue
        worst = max([worst] + [float((a - b).norm() / b.norm()) for a, b in zip(got, ref)])
    limit = 1e-5 if dtype == torch.float32 else 3e-2
    assert worst <= limit, f"leaf and its peers disagree: relative difference {worst:.1e}"
    return worst


def run_peers(args, here, sizes, reps: int, dtypes: list[str]) -> dict:
    """Each shape and dtype: leaf's fused loss and each peer, one fresh child per side and
    repetition (peak memory and the time of one call after :func:`peer_warmup`), the sides'
    order reversed from one repetition to the next."""
    import os

    rows = []
    for tokens, vocab, hidden in sizes:
        for dtype in dtypes:
            row = {"tokens": tokens, "vocab": vocab, "hidden": hidden, "dtype": dtype,
                   "peak_mib": {s: [] for s in PEER_SIDES}, "time_s": {s: [] for s in PEER_SIDES},
                   "loss": {}, "grad_norms": {}, "load_1min": []}
            for r in range(reps):
                for side in (PEER_SIDES if r % 2 == 0 else PEER_SIDES[::-1]):
                    res = C.run_child(here, [
                        "--child", side, "--tokens", str(tokens), "--vocab", str(vocab),
                        "--hidden", str(hidden), "--device", args.device, "--threads",
                        str(args.threads), "--dtype", dtype, "--reps", "1", "--peers",
                        *(["--eager"] if args.eager else [])], timeout=7200)
                    row["peak_mib"][side].append(C.mib(res["peak_bytes"]))
                    row["time_s"][side].append(res["times"][0])
                    row["loss"].setdefault(side, []).append(res["loss"])
                    row["grad_norms"].setdefault(side, []).append(res["grad_norms"])
                    row["load_1min"].append(os.getloadavg()[0])
                    row["mem_method"] = res["method"]
                    if side == "liger":
                        row["liger_mode"] = res["mode"]
            # the same value and gradients on every side (each child's, against leaf's)
            diffs = [abs(a - b) / abs(b)
                     for side in PEER_SIDES[1:]
                     for got, ref in zip(row["loss"][side], row["loss"]["fused"])
                     for a, b in [(got, ref)]]
            diffs += [abs(a - b) / b
                      for side in PEER_SIDES[1:]
                      for got, ref in zip(row["grad_norms"][side], row["grad_norms"]["fused"])
                      for a, b in zip(got, ref)]
            row["max_rel_diff"] = max(diffs)
            limit = 1e-4 if dtype == "float32" else 3e-2
            assert row["max_rel_diff"] <= limit, f"leaf and its peers disagree: {row}"
            peers = PEER_SIDES[1:]
            best_mem = [min(row["peak_mib"][p][i] for p in peers) for i in range(reps)]
            best_time = [min(row["time_s"][p][i] for p in peers) for i in range(reps)]
            row["mem_over_best_peer"] = C.summary(C.ratios(row["peak_mib"]["fused"], best_mem))
            row["time_over_best_peer"] = C.summary(C.ratios(row["time_s"]["fused"], best_time))
            for key in ("peak_mib", "time_s"):
                row[key] = {side: C.summary(v) for side, v in row[key].items()}
            print(f"T={tokens} V={vocab} H={hidden} {dtype}: peak MiB leaf "
                  f"{C.fmt(row['peak_mib']['fused'], 0)}, Liger {C.fmt(row['peak_mib']['liger'], 0)};"
                  f" time s leaf {C.fmt(row['time_s']['fused'], 2)}, Liger "
                  f"{C.fmt(row['time_s']['liger'], 2)} (Liger {row['liger_mode']}); leaf / best "
                  f"peer: memory {C.fmt(row['mem_over_best_peer'])}, time "
                  f"{C.fmt(row['time_over_best_peer'])}; largest relative difference "
                  f"{row['max_rel_diff']:.1e}; load average {min(row['load_1min']):.1f}-"
                  f"{max(row['load_1min']):.1f}", flush=True)
            rows.append(row)
    return {"rows": rows, "not_run": PEERS_NOT_RUN}


def memory_only(args, torch, device, sizes, dtypes) -> int:
    """``--peers --memory-only``: each side and dtype measured once per repetition in its own
    fresh child (peak memory above the inputs; the call's time is recorded, never compared),
    after the equality check at the small shape. With ``--append FILE`` the entries go into
    FILE beside those already there (written after every child), and a (shape, dtype, side)
    whose repetitions FILE already holds is skipped: a rerun resumes."""
    import os

    path = Path(args.json) if args.json else None
    reps = args.reps or 1  # memory is the same from one fresh child to the next
    sides = [PM.SIDE_NAMES[s] for s in (args.sides or ["leaf", "liger"])]
    settings = {"device": args.device, "threads": args.threads, "reps": reps,
                "chunk_size": CHUNK, "check": list(CHECK), "eager": args.eager,
                "leaf_commit": PM.code_version(C.ROOT), "torch": torch.__version__,
                "liger_version": _version("liger_kernel"),
                "leaf_weight_grad_dtype": str(_default("weight_grad_dtype"))}
    data = PM.load(path, settings) if (path and args.append) else PM.new(settings)
    if path and not args.append:  # --json alone replaces the file
        path.write_text(json.dumps(data, indent=1))
    data["commands"].append(_peers_command(args))
    for d in dtypes:
        worst = check_peers(device, torch, getattr(torch, d), args.eager)
        data["checks"][d] = max(worst, data["checks"].get(d, 0.0))
        print(f"check at T x V x H = {' x '.join(map(str, CHECK))}, {d}: loss and gradients of "
              f"the obvious loss, leaf's fused loss and Liger ({LIGER['mode']}) agree within "
              f"{worst:.1e} (relative norm)", flush=True)
    here = Path(__file__).resolve()
    for tokens, vocab, hidden in sizes:
        for dtype in dtypes:
            for r in range(reps):
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    e = PM.entry(data, tokens, vocab, hidden, dtype, side)
                    name = f"T={tokens} V={vocab} H={hidden} {dtype} {side}, repetition {r + 1}"
                    if len(e["peak_mib"]) > r:
                        print(f"{name}: already in {path}, skipped", flush=True)
                        continue
                    res = C.run_child(here, [
                        "--child", side, "--tokens", str(tokens), "--vocab", str(vocab),
                        "--hidden", str(hidden), "--device", args.device, "--threads",
                        str(args.threads), "--dtype", dtype, "--reps", "1", "--peers",
                        *(["--eager"] if args.eager else [])], timeout=7200)
                    e["peak_mib"].append(C.mib(res["peak_bytes"]))
                    e["time_s"].append(res["times"][0])
                    e["loss"].append(res["loss"])
                    e["grad_norms"].append(res["grad_norms"])
                    e["load_1min"].append(os.getloadavg()[0])
                    e["mode"].append(res["mode"])
                    e["date_utc"].append(C.machine_info(args.device, args.threads)["date_utc"])
                    e["mem_method"] = res["method"]
                    print(f"{name}: peak {e['peak_mib'][-1]:.0f} MiB above the inputs (one call "
                          f"{res['times'][0]:.0f} s, load average {e['load_1min'][-1]:.1f})",
                          flush=True)
                    if path:  # after every child: a command cut short keeps what it measured
                        data["machine"] = C.machine_info(args.device, args.threads)
                        PM.save(path, data)
                        data = PM.load(path, settings)
    if path:
        PM.save(path, data)
        data = PM.load(path, settings)
    rows = PM.rows(data)
    bad = [r for r in rows if r["max_rel_diff"] > r["limit"]]
    for r in rows:
        ratio = (C.fmt(r["mem_over_best_peer"]) if r["mem_over_best_peer"] else
                 "not resolved (" + ", ".join(r["unresolved"]) + f" < {PM.RESOLVED_MIB:g} MiB: "
                 "use a larger shape)")
        print(f"T={r['tokens']} V={r['vocab']} H={r['hidden']} {r['dtype']}: peak MiB leaf "
              f"{C.fmt(r['peak_mib']['fused'], 0)}, Liger {C.fmt(r['peak_mib']['liger'], 0)}; "
              f"leaf / best peer {ratio}; largest relative difference "
              f"{r['max_rel_diff']:.1e}", flush=True)
    if bad:
        raise SystemExit("leaf and its peers disagree: " + "; ".join(
            f"{r['tokens']} x {r['vocab']} {r['dtype']}: {r['max_rel_diff']:.1e} > {r['limit']}"
            for r in bad))
    if not rows:
        print("memory only: no shape holds leaf and a peer yet (run the other --sides)")
        return 0
    rows = [r for r in rows if r["mem_over_best_peer"]]
    if not rows:
        print("memory only: no shape's peaks are resolved, so no ratio")
        return 0
    last = max(rows, key=lambda r: (r["tokens"] * r["vocab"], r["dtype"] == "float32"))
    ratios = {"mem_over_best_peer": last["mem_over_best_peer"]["median"]}
    for r in rows:
        if r is not last and (r["tokens"], r["vocab"]) == (last["tokens"], last["vocab"]):
            ratios[f"mem_over_best_peer_{r['dtype']}"] = r["mem_over_best_peer"]["median"]
    print(C.ratio_line(ratios))
    return 0


def _peers_command(args) -> str:
    return ("python benchmarks/bench_kl.py --peers" + (" --memory-only" if args.memory_only else "")
            + (" --quick" if args.quick else "")
            + (f" --device {args.device}" if args.device != "cpu" else "")
            + (f" --threads {args.threads}" if args.threads != 1 else "")
            + (" --sizes " + " ".join(args.sizes) if args.sizes else "")
            + (f" --dtype {args.dtype}" if args.dtype_given else "")
            + (f" --reps {args.reps}" if args.reps else "")
            + (" --sides " + " ".join(args.sides) if args.sides else "")
            + (" --eager" if args.eager else "")
            + (f" --append {args.json}" if args.append and args.json else ""))


def peers_main(args) -> int:
    torch, device = C.setup_torch(args.threads, args.device)
    mode = "quick" if args.quick else "full"
    if args.memory_only and not args.quick:
        mode = "memory"
    sizes = [parse_size(x)[:3] for x in args.sizes] if args.sizes else PEER_SIZES[mode]
    dtypes = [args.dtype] if args.dtype_given else ["float32", "bfloat16"]
    if args.memory_only:
        return memory_only(args, torch, device, sizes, dtypes)
    reps = args.reps or 3
    checks = {d: check_peers(device, torch, getattr(torch, d), args.eager) for d in dtypes}
    for d, worst in checks.items():
        print(f"check at T x V x H = {' x '.join(map(str, CHECK))}, {d}: loss and gradients of "
              f"the obvious loss, leaf's fused loss and Liger ({LIGER['mode']}) agree within "
              f"{worst:.1e} (relative norm)", flush=True)
    here = Path(__file__).resolve()
    peers = run_peers(args, here, sizes, reps, dtypes)
    result = {
        "name": "peers",
        "machine": C.machine_info(args.device, args.threads),
        "command": "python benchmarks/bench_kl.py --peers" + (" --quick" if args.quick else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (f" --dtype {args.dtype}" if args.dtype_given else "")
        + (f" --threads {args.threads}" if args.threads != 1 else "")
        + (f" --reps {args.reps}" if args.reps else "")
        + (" --sizes " + " ".join(args.sizes) if args.sizes else "")
        + (" --eager" if args.eager else ""),
        "config": {"chunk_size": CHUNK, "reps": reps, "check": CHECK, "checks": checks,
                   "liger_mode": LIGER["mode"], "liger_version": _version("liger_kernel"),
                   "leaf_weight_grad_dtype": _default("weight_grad_dtype"),
                   "leaf_rows": {d: _rows(d) for d in dtypes}},
        **peers,
    }
    if args.json:
        path = Path(args.json)
        if args.append and path.exists():
            old = json.loads(path.read_text())
            keep = {(r["tokens"], r["vocab"], r["hidden"], r["dtype"]) for r in result["rows"]}
            result["rows"] = [r for r in old["rows"] if (r["tokens"], r["vocab"], r["hidden"],
                                                         r["dtype"]) not in keep] + result["rows"]
            result["commands"] = old.get("commands", [old["command"]]) + [result["command"]]
        path.write_text(json.dumps(result, indent=1))
    for name, why in PEERS_NOT_RUN.items():
        print(f"not run: {name}: {why}")
    last = max(peers["rows"], key=lambda r: (r["tokens"] * r["vocab"], r["dtype"] == "float32"))
    ratios = {"mem_over_best_peer": last["mem_over_best_peer"]["median"],
              "time_over_best_peer": last["time_over_best_peer"]["median"]}
    for r in peers["rows"]:
        if r is not last and (r["tokens"], r["vocab"]) == (last["tokens"], last["vocab"]):
            ratios[f"mem_over_best_peer_{r['dtype']}"] = r["mem_over_best_peer"]["median"]
            ratios[f"time_over_best_peer_{r['dtype']}"] = r["time_over_best_peer"]["median"]
    print(C.ratio_line(ratios))
    return 0


def _default(name: str):
    """A default of :func:`leaf.distill.fused.fused_distill_loss` (what the fused side runs)."""
    import inspect

    from leaf.distill.fused import fused_distill_loss

    return inspect.signature(fused_distill_loss).parameters[name].default


def _rows(dtype: str) -> int:
    """Positions per chunk of leaf's side in ``dtype``."""
    import torch

    from leaf.distill.fused import chunk_rows

    return chunk_rows(CHUNK, getattr(torch, dtype))


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module.replace("_", "-"))
    except PackageNotFoundError:
        return "absent"


def parse_size(text: str):
    shape, _, sides = text.partition(":")
    tokens, vocab, hidden = (int(x) for x in shape.split("x"))
    return tokens, vocab, hidden, tuple(sides.split(",")) if sides else SIDES


def available_bytes() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small settings, about a minute on 2 cores")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every side")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="dtype of hidden states and weights (leaf's chunk math runs in float32)")
    p.add_argument("--reps", type=int, help="timed calls per child (the first is also measured "
                                            "for memory)")
    p.add_argument("--no-step", action="store_true", help="skip the whole-training-step part")
    p.add_argument("--sizes", nargs="+", metavar="TxVxH[:SIDE,...]",
                   help="run these shapes (and sides) instead of the mode's plan, e.g. "
                        "8192x152064x2048:fused; 'step' for the training-step part")
    p.add_argument("--append", nargs="?", const=True, default=False, metavar="FILE",
                   help="add to the results already in FILE (or in --json's file): shapes run in "
                        "several invocations; with --memory-only, what FILE holds is skipped")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--peers", action="store_true",
                   help="leaf's fused loss against its peers (Liger-Kernel's chunked fused-linear "
                        "loss; pip install liger-kernel, the [bench] extra), float32 and bfloat16")
    p.add_argument("--eager", action="store_true", help="--peers: run Liger without torch.compile")
    p.add_argument("--memory-only", action="store_true",
                   help="--peers: peak memory only, each side once per repetition in its fresh "
                        "child (default --reps 1; default shape 8192x152064x2048), no timing "
                        "comparison; for shapes whose calls take too long to time on a CPU")
    p.add_argument("--sides", nargs="+", choices=sorted(PM.SIDE_NAMES), metavar="SIDE",
                   help="--memory-only: run only these sides (leaf, liger), e.g. one command per "
                        "side and dtype, all with --append to one file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--step", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    p.add_argument("--hidden", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if isinstance(args.append, str):
        if args.json and args.json != args.append:
            p.error("--append FILE and --json name different files")
        args.json, args.append = args.append, True
    if (args.memory_only or args.sides) and not args.peers:
        p.error("--memory-only and --sides go with --peers")
    if args.sides and not args.memory_only:
        p.error("--sides goes with --memory-only (the timed comparison runs every side)")
    args.dtype_given = any(a == "--dtype" or a.startswith("--dtype=")
                           for a in (sys.argv[1:] if argv is None else argv))
    if args.peers and not args.child:
        return peers_main(args)
    cfg = dict(QUICK if args.quick else FULL)
    if args.reps:
        cfg["reps"] = args.reps
    if args.sizes:
        cfg["sizes"] = [x if x == "step" else parse_size(x) for x in args.sizes]
    if args.child:
        (step_child if args.step else loss_child)(args, cfg)
        return 0
    torch, device = C.setup_torch(args.threads, args.device)
    dtype = getattr(torch, args.dtype)
    here = Path(__file__).resolve()
    base = ["--device", args.device, "--threads", str(args.threads), "--dtype", args.dtype,
            "--reps", str(cfg["reps"])] + (["--quick"] if args.quick else [])
    worst = check_small(device, dtype, torch)
    print(f"check at T x V x H = {' x '.join(map(str, CHECK))}: loss and gradients of the three "
          f"sides agree within {worst:.1e} (relative norm)", flush=True)
    rows: list[dict] = []
    step: dict[str, dict] = {}
    result = {
        "name": "kl",
        "machine": C.machine_info(args.device, args.threads),
        "command": "python benchmarks/bench_kl.py" + (" --quick" if args.quick else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (f" --dtype {args.dtype}" if args.dtype != "float32" else "")
        + (f" --threads {args.threads}" if args.threads != 1 else "")
        + (" --sizes " + " ".join(args.sizes) if args.sizes else "")
        + (" --no-step" if args.no_step else ""),
        "config": {"chunk_size": CHUNK, "dtype": args.dtype, "reps": cfg["reps"],
                   "check": CHECK, "check_max_rel_diff": worst, "step": cfg["step"],
                   "planned": [x if x == "step" else list(x[:3]) for x in cfg["sizes"]]},
        "rows": rows,
        "step": step,
    }

    def save() -> None:
        result["machine"] = C.machine_info(args.device, args.threads)
        if not args.json:
            return
        out = dict(result)
        path = Path(args.json)
        if args.append and path.exists():  # re-read: another invocation may have saved since
            old = json.loads(path.read_text())
            out["rows"] = merge_rows(old["rows"], [json.loads(json.dumps(r)) for r in rows])
            out["step"] = step or old.get("step", {})
            out["config"] = {**old["config"], "planned": old["config"].get("planned", [])}
            out["commands"] = old.get("commands", [old["command"]]) + [result["command"]]
        path.write_text(json.dumps(out, indent=1))

    for k, item in enumerate(cfg["sizes"]):
        if item == "step":
            if not args.no_step:
                run_step(here, base, cfg, step)
                save()
            continue
        rows.append(run_loss(here, base, item, k, args.device, torch.finfo(dtype).bits))
        save()
    compared = [r for r in rows if "fused_mem_ratio" in r and "chunked_mem_ratio" in r]
    if not compared:  # e.g. one side of one shape (--sizes): no ratio to print
        return 0
    last = max(compared, key=lambda r: r["tokens"] * r["vocab"])
    ratios = {"chunked_mem_ratio": last["chunked_mem_ratio"],
              "chunked_time_ratio": last["chunked_time_ratio"],
              "fused_mem_ratio": last["fused_mem_ratio"],
              "fused_time_ratio": last["fused_time_ratio"]}
    if step:
        ratios["step_fused_mem_ratio"] = step["fused"]["peak_mib"] / step["obvious"]["peak_mib"]
    print(C.ratio_line({k: ratios[k] for k in ratios if not k.startswith("fused_")}
                       | {k: ratios[k] for k in ratios if k.startswith("fused_")}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
