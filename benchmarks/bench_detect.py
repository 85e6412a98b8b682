"""Detection saliency: leaf's batched input-gradient saliency vs the authors' loop.

Both sides compute, for every sample, ``g_t = || dL / de(x_t) ||_2`` with ``L`` the mean
cross-entropy of the response tokens (teacher forcing, labels only on the response), on the
same randomly initialised Llama-architecture model (vocabulary 32k, so the embedding and
output matrices are large) and the same random token sequences (instruction ~200 tokens,
response ~300).

- **reference** (the released code's style): one sample at a time, the model left in train
  mode (dropout is 0 in Llama configs, so the maths is the same), the input embeddings taken
  from the embedding layer with ``retain_grad()``, the loss from the model's own ``labels=``
  path, ``loss.backward()`` (which also fills every parameter's ``.grad``), the embedding
  gradient's L2 norm read, then ``model.zero_grad()``.
- **leaf**: :func:`leaf.detect.saliency.saliency_and_nll` (what ``leaf detect`` calls, also
  returning per-token NLL) on length-sorted padded batches of ``--batch-size`` samples, as the
  ``leaf detect`` pipeline does: gradients w.r.t. the embeddings only, parameters frozen.
- **forward**: a plain no-grad forward pass of the model on the same padded batches (the floor).

The saliencies of both sides are checked to agree before anything is timed.

Run: ``python benchmarks/bench_detect.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common as C

# The parameter count must dwarf one sample's logits (tokens x vocabulary), as it does for real
# students (Llama-3.2-1B: 1.2B parameters vs 500 x 128k = 64M logits): 4-5x here.
QUICK = dict(vocab=32000, hidden=512, layers=2, heads=8, intermediate=1024, samples=2,
             batch_size=2, reps=3, inst=(100, 150), resp=(150, 200))
FULL = dict(vocab=32000, hidden=640, layers=3, heads=10, intermediate=1728, samples=8,
            batch_size=4, reps=3, inst=(150, 250), resp=(200, 400))
# memory only (full mode): parameters 10x one sample's logits, nearer a real student's 20x
DEEP = dict(vocab=32000, hidden=1024, layers=8, heads=16, intermediate=2816, samples=2,
            batch_size=1, reps=0, inst=(150, 250), resp=(200, 400))
# the CPU dry run of scripts/gpu_check.sh: every step of the script, in seconds
TOY = dict(vocab=1000, hidden=64, layers=2, heads=4, intermediate=128, samples=2, batch_size=2,
           reps=1, inst=(10, 20), resp=(10, 20))
# for a GPU: the shape of Llama-3.2-1B-Instruct (the paper's smallest student), random weights
LLAMA_1B = dict(vocab=128256, hidden=2048, layers=16, heads=32, intermediate=8192, samples=32,
                batch_size=8, reps=5, inst=(150, 250), resp=(200, 400))


def make_data(cfg: dict, seed: int = 1):
    """Token sequences and labels (``-100`` on the instruction, the token on the response)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(cfg["samples"]):
        n_i = int(torch.randint(cfg["inst"][0], cfg["inst"][1] + 1, (1,), generator=g))
        n_r = int(torch.randint(cfg["resp"][0], cfg["resp"][1] + 1, (1,), generator=g))
        ids = torch.randint(3, cfg["vocab"], (n_i + n_r,), generator=g)
        labels = ids.clone()
        labels[:n_i] = -100
        rows.append((ids.tolist(), labels.tolist()))
    return rows


# ---------------------------------------------------------------- the two sides


def reference_saliency(model, rows, device):
    """The authors' style: batch of 1, train mode, full ``loss.backward()``."""
    import torch

    model.train()  # as released (dropout probability is 0 in this config)
    out = []
    for ids, labels in rows:
        input_ids = torch.tensor([ids], device=device)
        lab = torch.tensor([labels], device=device)
        embeds = model.get_input_embeddings()(input_ids)
        embeds.retain_grad()
        loss = model(inputs_embeds=embeds, labels=lab).loss  # mean CE over response tokens
        loss.backward()  # also fills every parameter's .grad
        out.append(embeds.grad[0].norm(dim=-1).detach())
        model.zero_grad()
    return out


def leaf_batches(rows, batch_size: int, device):
    """Length-sorted padded batches, as ``leaf.detect.score_samples.token_scores`` builds them."""
    from leaf.detect.saliency import pad_batch

    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    batches = []
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        ids, mask, lab = pad_batch([rows[i][0] for i in idx], [rows[i][1] for i in idx], 0)
        batches.append((idx, ids.to(device), mask.to(device), lab.to(device)))
    return batches


def leaf_saliency(model, batches, n: int):
    from leaf.detect.saliency import saliency_and_nll

    out = [None] * n
    for idx, ids, mask, lab in batches:
        sal = saliency_and_nll(model, ids, mask, lab).saliency
        for row, i in enumerate(idx):
            out[i] = sal[row, : int(mask[row].sum())]
    return out


def plain_forward(model, batches):
    import torch

    from leaf.detect.saliency import position_ids_from_mask

    model.eval()
    with torch.no_grad():
        for _, ids, mask, _ in batches:
            model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                  use_cache=False)


# ---------------------------------------------------------------- child: peak memory


def child(args, cfg) -> None:
    torch, device = C.setup_torch(args.threads, args.device)
    if args.deep:
        cfg = dict(DEEP)
    model = C.llama(cfg["vocab"], cfg["hidden"], cfg["layers"], cfg["heads"],
                    cfg["intermediate"]).to(device, getattr(torch, args.dtype))
    rows = make_data(cfg)
    tiny = [(r[0][:8], [-100] * 4 + r[0][4:8]) for r in rows[:1]]
    side = args.child
    # memory is freed between items, so a pass's peak is its largest item's: run only that one
    longest = max(rows, key=lambda r: len(r[0]))
    if side == "reference":
        reference_saliency(model, tiny, device)  # lazy initialisations, small
        model.zero_grad(set_to_none=True)
        with C.PeakMemory(device) as peak:
            reference_saliency(model, [longest], device)
    else:
        bs = 1 if side == "leaf_b1" else cfg["batch_size"]
        leaf_saliency(model, leaf_batches(tiny, 1, device), 1)
        batches = leaf_batches(rows, bs, device)
        biggest = [max(batches, key=lambda b: b[1].numel())]
        with C.PeakMemory(device) as peak:
            leaf_saliency(model, biggest, len(rows))
    C.child_report(peak, side=side, params=C.n_params(model), tokens=len(longest[0]),
                   vocab=cfg["vocab"])


# ---------------------------------------------------------------- parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small settings, under a minute on 2 cores")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="model dtype for all sides (the authors ran float16 on GPUs)")
    p.add_argument("--llama-1b", action="store_true",
                   help="a model shaped like Llama-3.2-1B (for a GPU; overrides --quick)")
    p.add_argument("--toy", action="store_true",
                   help="a toy shape: checks that the script runs (scripts/gpu_check.sh --dry-run)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for both sides")
    p.add_argument("--reps", type=int, help="timed repetitions per side")
    p.add_argument("--batch-size", type=int, help="leaf's batch size (default: the shape's, 4 in full mode)")
    p.add_argument("--samples", type=int)
    p.add_argument("--mem-reps", type=int, default=None,
                   help="child processes per side for memory (0: no memory, with --toy only)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--deep", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cfg = dict(TOY if args.toy else LLAMA_1B if args.llama_1b else QUICK if args.quick else FULL)
    for key in ("reps", "batch_size", "samples"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.child:
        child(args, cfg)
        return 0

    torch, device = C.setup_torch(args.threads, args.device)
    model = C.llama(cfg["vocab"], cfg["hidden"], cfg["layers"], cfg["heads"],
                    cfg["intermediate"]).to(device, getattr(torch, args.dtype))
    rows = make_data(cfg)
    n_tokens = sum(len(r[0]) for r in rows)
    batches = leaf_batches(rows, cfg["batch_size"], device)
    singles = leaf_batches(rows, 1, device)

    # same answer first (also the warm-up)
    ref = reference_saliency(model, rows, device)
    worst = 0.0
    for bat in (batches, singles):
        ours = leaf_saliency(model, bat, len(rows))
        worst = max([worst] + [float(((a - b).abs() / (a.abs().max() + 1e-30)).max())
                               for a, b in zip(ref, ours)])
    limit = 1e-3 if args.dtype == "float32" else 5e-2
    assert worst < limit, f"saliencies differ: worst relative error {worst:.2e}"
    assert all(p.grad is None for p in model.parameters()), "leaf left parameter gradients"

    plain_forward(model, singles)  # warm-up of the forward sides
    plain_forward(model, batches)
    times = C.interleaved(
        {"reference": lambda: reference_saliency(model, rows, device),
         "leaf_b1": lambda: leaf_saliency(model, singles, len(rows)),
         "leaf_batch": lambda: leaf_saliency(model, batches, len(rows)),
         "forward_b1": lambda: plain_forward(model, singles),
         "forward_batch": lambda: plain_forward(model, batches)},
        cfg["reps"], device, warmup=0,
    )
    speedup = C.ratios(times["reference"], times["leaf_batch"])
    speedup_b1 = C.ratios(times["reference"], times["leaf_b1"])
    vs_fwd = C.ratios(times["leaf_batch"], times["forward_batch"])
    vs_fwd_b1 = C.ratios(times["leaf_b1"], times["forward_b1"])

    mem_reps = (1 if args.quick else 3) if args.mem_reps is None else args.mem_reps
    if mem_reps == 0 and not args.toy:
        raise SystemExit("--mem-reps 0 is for --toy runs only (every reported run measures memory)")
    mem: dict[str, list[float]] = {"reference": [], "leaf_b1": [], "leaf_batch": []}
    method = ""
    here = Path(__file__).resolve()
    base = ["--device", args.device, "--threads", str(args.threads), "--dtype", args.dtype]
    base += ["--quick"] if args.quick else []
    base += ["--llama-1b"] if args.llama_1b else []
    base += ["--toy"] if args.toy else []
    base += ["--batch-size", str(cfg["batch_size"]), "--samples", str(cfg["samples"])]
    for r in range(mem_reps):
        sides = list(mem) if r % 2 == 0 else list(mem)[::-1]
        for side in sides:
            res = C.run_child(here, ["--child", side, *base])
            mem[side].append(res["peak_bytes"])
            method = res["method"]
    if mem_reps == 0:  # a toy run: no memory figures (a NaN placeholder keeps the layout)
        mem = {k: [float("nan")] for k in mem}
    mem_b1 = C.ratios(mem["leaf_b1"], mem["reference"])
    mem_bb = C.ratios(mem["leaf_batch"], mem["reference"])
    deep: dict[str, list[float]] = {"reference": [], "leaf_b1": []}
    deep_info = {}
    if not (args.quick or args.llama_1b or args.toy):
        for r in range(2):
            for side in (list(deep) if r % 2 == 0 else list(deep)[::-1]):
                res = C.run_child(here, ["--child", side, "--deep", *base])
                deep[side].append(res["peak_bytes"])
                deep_info = {**DEEP, "params": res["params"], "tokens": res["tokens"]}

    result = {
        "name": "detect",
        "machine": C.machine_info(args.device, args.threads),
        "command": "python benchmarks/bench_detect.py" + (" --quick" if args.quick else "")
        + (" --llama-1b" if args.llama_1b else "") + (" --toy" if args.toy else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (f" --dtype {args.dtype}" if args.dtype != "float32" else ""),
        "config": {**cfg, "params": C.n_params(model), "tokens": n_tokens, "dtype": args.dtype},
        "max_rel_err": worst,
        "time_s": {k: C.summary(v) for k, v in times.items()},
        "samples_per_s": {k: C.summary([len(rows) / t for t in v]) for k, v in times.items()},
        "speedup": C.summary(speedup),
        "speedup_b1": C.summary(speedup_b1),
        "leaf_over_forward": C.summary(vs_fwd),
        "leaf_over_forward_b1": C.summary(vs_fwd_b1),
        "peak_mib": {k: C.summary([C.mib(x) for x in v]) for k, v in mem.items()},
        "mem_ratio_b1": C.summary(mem_b1),
        "mem_ratio_batch": C.summary(mem_bb),
        "mem_method": method,
    }
    if deep_info:
        result["deep"] = {
            "config": deep_info,
            "peak_mib": {k: C.summary([C.mib(x) for x in v]) for k, v in deep.items()},
            "mem_ratio_b1": C.summary(C.ratios(deep["leaf_b1"], deep["reference"])),
        }
    print(json.dumps(result["config"]))
    print(f"params {result['config']['params'] / 1e6:.1f}M, {len(rows)} samples, {n_tokens} tokens, "
          f"max relative saliency difference {worst:.1e}")
    for k in times:
        print(f"{k:10s} time/pass {C.fmt(result['time_s'][k], 3)} s   "
              f"samples/s {C.fmt(result['samples_per_s'][k])}")
    for k in mem:
        print(f"{k:10s} peak {C.fmt(result['peak_mib'][k], 1)} MiB")
    print(f"memory method: {method}")
    if deep_info:
        d = result["deep"]
        print(f"deeper model ({deep_info['params'] / 1e6:.0f}M parameters, one sample of "
              f"{deep_info['tokens']} tokens): peak MiB reference "
              f"{C.fmt(d['peak_mib']['reference'], 0)}, leaf {C.fmt(d['peak_mib']['leaf_b1'], 0)}"
              f" -> ratio {C.fmt(d['mem_ratio_b1'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    b = cfg["batch_size"]
    print(C.ratio_line({
        f"speedup_b{b}": result["speedup"]["median"],
        "speedup_b1": result["speedup_b1"]["median"],
        "mem_ratio_b1": result["mem_ratio_b1"]["median"],
        f"mem_ratio_b{b}": result["mem_ratio_batch"]["median"],
        f"leaf_over_forward_b{b}": result["leaf_over_forward"]["median"],
        "leaf_over_forward_b1": result["leaf_over_forward_b1"]["median"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
