"""Forward KL over the full vocabulary: leaf's chunked loss vs the obvious one.

Both sides compute ``sum_i t^2 KL(p_T(.|i) || p_S(.|i))`` over every position ``i`` of a batch of
student and teacher logits ``[B, T, V]`` (all positions are response tokens), then its gradient
with respect to the student logits:

- **obvious**: :func:`leaf.distill.losses.token_divergence` on the flattened ``[B*T, V]``
  logits (float32 log-softmax of both, ``p_T (log p_T - log p_S)`` summed over the vocabulary),
  summed over positions: every ``[B*T, V]`` intermediate is alive at once and kept for backward.
- **chunked**: :func:`leaf.distill.losses.chunked_divergence` with the trainer's default chunk of
  256 positions (``kd_chunk_size``), and with chunks of 1024 positions (``chunked_1024``).

Same inputs, same loss and gradient (checked with ``allclose`` at every size before timing).
Peak memory is what the loss and its backward add on top of the two logits tensors (the
student gradient ``[B*T, V]`` that both sides must produce is included).

Run: ``python benchmarks/bench_kl.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common as C

QUICK = dict(sizes=[(256, 32000), (2048, 16000)], reps=3, mem_reps=1)
# sequence length grows at V = 32000, then the vocabulary at T = 2048; the last two rows hold
# 1 GiB per float32 logits tensor (the obvious loss then peaks near 8 GiB on a 23 GiB machine)
FULL = dict(sizes=[(512, 32000), (2048, 32000), (4096, 32000), (2048, 64000), (2048, 128256),
                   (4096, 64000)], reps=3, mem_reps=2)
CHUNK = 256  # the trainer's default (DistillArguments.kd_chunk_size)
LARGE_CHUNK = 1024  # the default before this benchmark


def make_logits(tokens: int, vocab: int, device, dtype, seed: int = 0):
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    student = (2 * torch.randn(1, tokens, vocab, generator=g)).to(device, dtype).requires_grad_()
    teacher = (2 * torch.randn(1, tokens, vocab, generator=g)).to(device, dtype)
    groups = torch.zeros(1, tokens, dtype=torch.long, device=device)
    return student, teacher, groups


def obvious(student, teacher, groups):
    from leaf.distill.losses import token_divergence

    vocab = student.shape[-1]
    div = token_divergence(student.reshape(-1, vocab), teacher.reshape(-1, vocab))
    loss = (div * (groups.reshape(-1) >= 0)).sum()
    loss.backward()
    return loss.detach()


def chunked(student, teacher, groups, chunk_size=CHUNK):
    from leaf.distill.losses import chunked_divergence

    loss = chunked_divergence(student, teacher, groups, num_groups=1, chunk_size=chunk_size).sum()
    loss.backward()
    return loss.detach()


def chunked_large(student, teacher, groups):
    return chunked(student, teacher, groups, LARGE_CHUNK)


SIDES = {"obvious": obvious, "chunked": chunked, "chunked_1024": chunked_large}


def child(args) -> None:
    torch, device = C.setup_torch(args.threads, args.device)
    dtype = getattr(torch, args.dtype)
    fn = SIDES[args.child]
    small = make_logits(8, 64, device, dtype)
    fn(*small)  # lazy initialisations
    del small
    student, teacher, groups = make_logits(args.tokens, args.vocab, device, dtype)
    with C.PeakMemory(device) as peak:
        fn(student, teacher, groups)
    C.child_report(peak, side=args.child, tokens=args.tokens, vocab=args.vocab)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small settings, under a minute on 2 cores")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for both sides")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="dtype of the logits (the losses compute in float32 either way)")
    p.add_argument("--reps", type=int)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    cfg = dict(QUICK if args.quick else FULL)
    if args.reps:
        cfg["reps"] = args.reps
    torch, device = C.setup_torch(args.threads, args.device)
    dtype = getattr(torch, args.dtype)
    here = Path(__file__).resolve()
    base = ["--device", args.device, "--threads", str(args.threads), "--dtype", args.dtype]
    tol = dict(rtol=1e-4, atol=1e-6) if args.dtype == "float32" else dict(rtol=2e-2, atol=1e-4)
    rows = []
    for tokens, vocab in cfg["sizes"]:
        student, teacher, groups = make_logits(tokens, vocab, device, dtype)
        # same loss and gradient (also the warm-up)
        ref_loss = obvious(student, teacher, groups)
        ref_grad, student.grad = student.grad, None
        max_err = 0.0
        for fn in (chunked, chunked_large):
            student.grad = None
            loss = fn(student, teacher, groups)
            assert torch.allclose(loss, ref_loss, **tol), (float(loss), float(ref_loss))
            assert torch.allclose(student.grad, ref_grad, **tol), "gradients differ"
            max_err = max(max_err, float((student.grad - ref_grad).abs().max()))
        del ref_grad

        def run(fn, s, t, g):
            def call():
                s.grad = None
                fn(s, t, g)
            return call

        times = C.interleaved({k: run(f, student, teacher, groups) for k, f in SIDES.items()},
                              cfg["reps"], device, warmup=0)
        student.grad = None
        del student, teacher, groups
        mem: dict[str, list[float]] = {k: [] for k in SIDES}
        method = ""
        for r in range(cfg["mem_reps"]):
            for side in (list(SIDES) if r % 2 == 0 else list(SIDES)[::-1]):
                res = C.run_child(here, ["--child", side, "--tokens", str(tokens),
                                         "--vocab", str(vocab), *base])
                mem[side].append(res["peak_bytes"])
                method = res["method"]
        row = {
            "tokens": tokens, "vocab": vocab,
            "logits_mib": C.mib(tokens * vocab * torch.finfo(dtype).bits / 8),
            "loss": float(ref_loss), "max_abs_grad_diff": max_err,
            "time_s": {k: C.summary(v) for k, v in times.items()},
            "time_ratio": C.summary(C.ratios(times["chunked"], times["obvious"])),
            "time_ratio_1024": C.summary(C.ratios(times["chunked_1024"], times["obvious"])),
            "peak_mib": {k: C.summary([C.mib(x) for x in v]) for k, v in mem.items()},
            "mem_ratio": C.summary(C.ratios(mem["chunked"], mem["obvious"])),
            "mem_ratio_1024": C.summary(C.ratios(mem["chunked_1024"], mem["obvious"])),
            "mem_method": method,
        }
        rows.append(row)
        print(f"T={tokens:5d} V={vocab:6d} (one logits tensor {row['logits_mib']:.0f} MiB), "
              f"peak MiB / time s: " + "; ".join(
                  f"{k} {C.fmt(row['peak_mib'][k], 0)} / {C.fmt(row['time_s'][k])}" for k in SIDES)
              + f"; memory ratio {row['mem_ratio']['median']:.3f} (chunk {CHUNK}), "
              f"{row['mem_ratio_1024']['median']:.3f} (chunk {LARGE_CHUNK})", flush=True)
    result = {
        "name": "kl",
        "machine": C.machine_info(args.device, args.threads),
        "command": "python benchmarks/bench_kl.py" + (" --quick" if args.quick else "")
        + (f" --device {args.device}" if args.device != "cpu" else ""),
        "config": {"chunk_size": CHUNK, "large_chunk_size": LARGE_CHUNK, "dtype": args.dtype, "reps": cfg["reps"],
                   "mem_reps": cfg["mem_reps"]},
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    last = rows[-1]
    print(C.ratio_line({"mem_ratio_largest": last["mem_ratio"]["median"],
                        "time_ratio_largest": last["time_ratio"]["median"],
                        "mem_ratio_largest_chunk1024": last["mem_ratio_1024"]["median"],
                        "time_ratio_largest_chunk1024": last["time_ratio_1024"]["median"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
