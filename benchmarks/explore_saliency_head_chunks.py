"""Exploration, not leaf code: saliency with the output layer applied over chunks of positions.

A prototype of the change proposed in docs/PERFORMANCE.md for ``leaf.detect.saliency``: run
the decoder once with the graph, then apply the output layer and the cross-entropy chunk by
chunk (each chunk's gradient with respect to the hidden states taken at once), and finally
``autograd.grad(hidden, embeds, grad_hidden)``. Valid only for models whose logits are
``lm_head(hidden)`` (Llama, Qwen2, Mistral; not Gemma-2's soft-capping). It checks that it
returns leaf's saliency and NLL, then times it against leaf (batch 1) and a plain forward pass,
interleaved, and measures peak memory of leaf, the prototype and the reference loop in fresh
processes, on bench_detect's full shape.

Run: ``python benchmarks/explore_saliency_head_chunks.py [--samples 4] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _common as C
import bench_detect as D

CHUNK = 256


def head_chunked_saliency(model, input_ids, attention_mask, labels, chunk: int = CHUNK):
    """``(saliency [B, T], nll [B, T])`` as ``leaf.detect.saliency.saliency_and_nll`` gives."""
    import torch
    import torch.nn.functional as F

    from leaf.detect.saliency import IGNORE_INDEX, _frozen_eval, position_ids_from_mask

    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    with _frozen_eval(model), torch.enable_grad():
        embeds = embed(input_ids).detach().requires_grad_(True)
        hidden = model.get_decoder()(
            inputs_embeds=embeds, attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask), use_cache=False,
        ).last_hidden_state
        b, t, h = hidden.shape
        real = attention_mask.bool()
        predicted = real[:, 1:] & real[:, :-1]
        in_loss = (labels[:, 1:] != IGNORE_INDEX) & predicted
        targets = torch.where(labels != IGNORE_INDEX, labels, input_ids)[:, 1:].reshape(-1)
        weight = (in_loss / in_loss.sum(1, keepdim=True).clamp(min=1)).reshape(-1)
        flat = hidden.detach()[:, :-1].reshape(-1, h)
        grad_flat = torch.zeros_like(flat)
        nll = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
        for lo in range(0, flat.shape[0], chunk):
            hc = flat[lo:lo + chunk].requires_grad_(True)
            ce = F.cross_entropy(head(hc).float(), targets[lo:lo + chunk], reduction="none")
            nll[lo:lo + chunk] = ce.detach()
            w = weight[lo:lo + chunk]
            if bool((w > 0).any()):
                (grad_flat[lo:lo + chunk],) = torch.autograd.grad((ce * w).sum(), hc)
        grad_hidden = torch.zeros_like(hidden)
        grad_hidden[:, :-1] = grad_flat.view(b, t - 1, h)
        (grad,) = torch.autograd.grad(hidden, embeds, grad_hidden)
    saliency = grad.float().norm(dim=-1) * real
    nll = torch.cat([nll.new_zeros(b, 1), (nll.view(b, t - 1) * predicted)], 1)
    return saliency, nll


def proto_pass(model, batches, n):
    out = [None] * n
    for idx, ids, mask, lab in batches:
        sal, _ = head_chunked_saliency(model, ids, mask, lab)
        for row, i in enumerate(idx):
            out[i] = sal[row, : int(mask[row].sum())]
    return out


def child(args) -> None:
    torch, device = C.setup_torch(1, "cpu")
    cfg = dict(D.FULL, samples=args.samples)
    model = C.llama(cfg["vocab"], cfg["hidden"], cfg["layers"], cfg["heads"], cfg["intermediate"])
    rows = D.make_data(cfg)
    longest = max(rows, key=lambda r: len(r[0]))
    tiny = [(rows[0][0][:8], [-100] * 4 + rows[0][0][4:8])]
    fn = {"reference": lambda rs: D.reference_saliency(model, rs, device),
          "leaf_b1": lambda rs: D.leaf_saliency(model, D.leaf_batches(rs, 1, device), len(rs)),
          "proto_b1": lambda rs: proto_pass(model, D.leaf_batches(rs, 1, device), len(rs))}
    fn[args.child](tiny)
    model.zero_grad(set_to_none=True)
    with C.PeakMemory(device) as peak:
        fn[args.child]([longest])
    C.child_report(peak, side=args.child)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    torch, device = C.setup_torch(1, "cpu")
    from leaf.detect.saliency import saliency_and_nll

    cfg = dict(D.FULL, samples=args.samples)
    model = C.llama(cfg["vocab"], cfg["hidden"], cfg["layers"], cfg["heads"], cfg["intermediate"])
    rows = D.make_data(cfg)
    singles = D.leaf_batches(rows, 1, device)
    batched = D.leaf_batches(rows, 2, device)
    for _, ids, mask, lab in batched:  # same saliency and NLL as leaf, padded batches too
        ref = saliency_and_nll(model, ids, mask, lab)
        sal, nll = head_chunked_saliency(model, ids, mask, lab)
        assert torch.allclose(sal, ref.saliency, rtol=1e-4, atol=1e-9), "saliency differs"
        assert torch.allclose(nll, ref.nll, rtol=1e-4, atol=1e-5), "nll differs"
    n = len(rows)
    D.plain_forward(model, singles)
    proto_pass(model, singles, n)
    times = C.interleaved({"leaf_b1": lambda: D.leaf_saliency(model, singles, n),
                           "proto_b1": lambda: proto_pass(model, singles, n),
                           "forward_b1": lambda: D.plain_forward(model, singles)},
                          args.reps, device, warmup=0)
    here = Path(__file__).resolve()
    mem = {k: C.run_child(here, ["--child", k, "--samples", str(args.samples)])["peak_bytes"]
           for k in ("reference", "leaf_b1", "proto_b1")}
    for k, v in times.items():
        print(f"{k:10s} time/pass {C.fmt(C.summary(v))} s")
    for k, v in mem.items():
        print(f"{k:10s} peak {C.mib(v):.0f} MiB")
    ratios = {
        "proto_over_leaf_time": C.summary(C.ratios(times["proto_b1"], times["leaf_b1"]))["median"],
        "proto_over_forward": C.summary(C.ratios(times["proto_b1"], times["forward_b1"]))["median"],
        "leaf_over_forward": C.summary(C.ratios(times["leaf_b1"], times["forward_b1"]))["median"],
        "proto_mem_over_reference": mem["proto_b1"] / mem["reference"],
        "leaf_mem_over_reference": mem["leaf_b1"] / mem["reference"],
    }
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({
            "name": "explore_saliency", "machine": C.machine_info("cpu", 1),
            "command": f"python benchmarks/explore_saliency_head_chunks.py --samples "
                       f"{args.samples} --reps {args.reps}",
            "config": {**cfg, "chunk": CHUNK, "params": C.n_params(model)},
            "time_s": {k: C.summary(v) for k, v in times.items()},
            "peak_mib": {k: C.mib(v) for k, v in mem.items()}, "ratios": ratios}, indent=1))
    print(C.ratio_line(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
