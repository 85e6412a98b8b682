"""How far leaf's fused loss lands from an exact one in bfloat16: the weight gradient's sum.

On bfloat16 inputs (the student's final hidden states and output weight, the teacher's), the
forward KL summed over every position and its gradients are computed

- **exactly**: the same bfloat16 values in float64, chunk by chunk (both models' logits,
  log-softmax, ``p_S - p_T``, both gradient products), the reference;
- **leaf, float32 sum**: :func:`leaf.distill.fused.fused_distill_loss` with
  ``accumulate="float32"``: the weight's gradient summed over the chunks in float32, cast to
  bfloat16 once;
- **leaf, bfloat16 sum**: ``accumulate="weight"``: summed in the weight's bfloat16, one
  rounding per chunk;
- **Liger** (when ``liger-kernel`` is installed): ``LigerFusedLinearJSDLoss`` with ``beta=0``, as
  in ``bench_kl.py --peers``, for scale;
- **rounding floor**: the exact gradients rounded to bfloat16 once, the best any bfloat16 result
  can do.

It prints the relative error ``||x - exact|| / ||exact||`` of the loss and of both gradients,
and the bytes each weight-gradient sum takes. Run: ``python benchmarks/precision_kl.py
[--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common as C

CHUNK = 256
FULL = [(1024, 32000, 256), (4096, 32000, 256), (4096, 128256, 256), (4096, 32000, 1024)]
QUICK = [(512, 16000, 128), (2048, 16000, 128)]


def inputs(tokens, vocab, hidden, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=g).bfloat16()
    w = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).bfloat16()
    ht = (1.5 * torch.randn(tokens, hidden, generator=g)).bfloat16()
    return h, w, ht


def exact(h, w, ht):
    """Loss and gradients in float64 from the bfloat16 values, ``CHUNK`` rows at a time."""
    import torch

    h64, w64, ht64 = h.double(), w.double(), ht.double()
    loss = torch.zeros((), dtype=torch.float64)
    grad_h = torch.empty_like(h64)
    grad_w = torch.zeros_like(w64)
    for lo in range(0, h.shape[0], CHUNK):
        hs = h64[lo : lo + CHUNK]
        log_s = torch.log_softmax(hs @ w64.T, -1)
        log_t = torch.log_softmax(ht64[lo : lo + CHUNK] @ w64.T, -1)
        p_t = log_t.exp()
        loss += (p_t * (log_t - log_s)).sum()
        g = log_s.exp() - p_t
        grad_h[lo : lo + CHUNK] = g @ w64
        grad_w += g.T @ hs
    return loss, grad_h, grad_w


def leaf_side(h, w, ht, accumulate):
    import torch

    from leaf.distill.fused import fused_distill_loss, teacher_from_hidden

    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    head = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
    head.weight = torch.nn.Parameter(w.detach(), requires_grad=False)
    out = fused_distill_loss(h, w, torch.zeros(h.shape[0], dtype=torch.long), torch.ones(1),
                             teacher=teacher_from_hidden(ht, head), num_groups=1,
                             chunk_size=CHUNK, weight_grad_dtype=accumulate)
    out.loss.backward()
    return out.loss.detach(), h.grad, w.grad


def liger_side(h, w, ht):
    import torch
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    labels = torch.zeros(h.shape[0], dtype=torch.long)
    fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.0,
                                 temperature=1.0, compiled=False, chunk_size=CHUNK)
    loss = fn(h, w, ht, w.detach(), labels) * h.shape[0]
    loss.backward()
    return loss.detach(), h.grad, w.grad


def rel(a, b) -> float:
    return float((a.double() - b).norm() / b.norm())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="two small shapes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch, _ = C.setup_torch(args.threads, "cpu")
    try:
        import liger_kernel  # noqa: F401 (optional: the peer, for scale)
        sides = ("float32", "weight", "liger")
    except ImportError:
        sides = ("float32", "weight")
    rows = []
    for tokens, vocab, hidden in (QUICK if args.quick else FULL):
        h, w, ht = inputs(tokens, vocab, hidden)
        ref = exact(h, w, ht)
        row = {"tokens": tokens, "vocab": vocab, "hidden": hidden,
               "chunks": -(-tokens // (CHUNK // 2)), "error": {},
               "sum_mib": {"float32": C.mib(vocab * hidden * 4),
                           "weight": C.mib(vocab * hidden * 2)}}
        row["error"]["floor"] = [rel(x.to(torch.bfloat16), x) for x in ref]
        for side in sides:
            got = liger_side(h, w, ht) if side == "liger" else leaf_side(h, w, ht, side)
            row["error"][side] = [rel(a, b) for a, b in zip(got, ref)]
        print(f"T={tokens} V={vocab} H={hidden} ({row['chunks']} chunks of {CHUNK // 2} rows): "
              "relative error of loss, grad h, grad W: " + "; ".join(
                  f"{k} " + ", ".join(f"{x:.1e}" for x in v) for k, v in row["error"].items()),
              flush=True)
        rows.append(row)
    result = {"name": "precision", "machine": C.machine_info("cpu", args.threads),
              "command": "python benchmarks/precision_kl.py" + (" --quick" if args.quick else ""),
              "config": {"chunk_size": CHUNK, "sides": list(sides)}, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    last = rows[-1]["error"]
    print(C.ratio_line({"grad_w_error_float32_sum": last["float32"][2],
                        "grad_w_error_bf16_sum": last["weight"][2],
                        "grad_w_error_floor": last["floor"][2]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
