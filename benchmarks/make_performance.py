"""Run the benchmarks in full mode and regenerate ``docs/PERFORMANCE.md`` from their results.

    python benchmarks/make_performance.py --write                 # run them all, rewrite the page
    python benchmarks/make_performance.py --write --render-only   # rewrite the page from results/
    python benchmarks/make_performance.py --write --only kl       # rerun one, keep the others'
    python benchmarks/make_performance.py --quick-only            # a check: writes to a temp dir

Each benchmark writes ``results/<name>.json`` (and its console output to ``<name>.log``); the
page is rendered from those files only, so every number in it comes from a run whose command,
machine, library versions and date are printed beside its table. The quick runs' last lines go
to ``results/quick.json`` (their full output is not kept: a ``--quick`` run of a benchmark
script itself writes nothing).

Only ``--write`` touches the tracked files (``benchmarks/results/`` and ``docs/PERFORMANCE.md``).
Without it, every output (the results, the logs, ``quick.json`` and the page) goes to ``--out``
(default: a new temporary directory, printed at the end), and the page there is rendered from the
tracked results with this run's on top: a check leaves the checkout as it found it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import peers_memory as PM

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PAGE = C.ROOT / "docs" / "PERFORMANCE.md"
NAMES = ("detect", "kl", "distill", "generate", "dp", "peers", "distill_peers")
# a results name -> (script, its extra arguments) where they are not bench_<name>.py alone
# results that the page shows beside another's table, made by a command of their own (printed
# with them) and copied here: a quick generation run on an idle machine (section 4's current
# figure) and precision_kl.py's errors (section 6)
EXTRA = ("generate_quick", "peers_precision", PM.NAME)
SCRIPTS = {"peers": ("bench_kl.py", ["--peers"]),
           "distill_peers": ("bench_distill.py", ["--peers"])}


def script_of(name: str) -> tuple[str, list[str]]:
    return SCRIPTS.get(name, (f"bench_{name}.py", []))


def run(name: str, extra: list[str], results: Path = RESULTS) -> None:
    results.mkdir(parents=True, exist_ok=True)
    script, own = script_of(name)
    cmd = [sys.executable, str(HERE / script), *own, "--json", str(results / f"{name}.json"),
           *extra]
    print("running", " ".join(cmd), flush=True)
    with open(results / f"{name}.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)


def run_quick(name: str, extra: list[str]) -> dict:
    """Run ``--quick``; return its wall time and last line (the RATIO line)."""
    script, own = script_of(name)
    cmd = [sys.executable, str(HERE / script), *own, "--quick", *extra]
    print("running", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    last = proc.stdout.strip().splitlines()[-1]
    return {"command": f"python benchmarks/{script} " + " ".join([*own, "--quick", *extra]),
            "wall_s": wall, "last_line": last}


def render_peers(r: dict, precision: dict | None = None, memory: dict | None = None) -> list[str]:
    """Section 6: leaf's fused loss beside its peers (``bench_kl.py --peers``), how far each
    lands from an exact loss in bfloat16 (``precision_kl.py``), and the memory-only rows of the
    largest shape (``bench_kl.py --peers --memory-only``)."""
    c, f = r["config"], C.fmt
    commands = r.get("commands", [r["command"]])
    rows_per = c.get("leaf_rows", {})
    leaf_chunks = (" (chunks of " + ", ".join(f"{n} positions for {d} inputs"
                                              for d, n in rows_per.items())
                   + ": a 16-bit chunk holds half the positions, so that its float32 buffers "
                   f"take the bytes of a 16-bit chunk of {c['chunk_size']})"
                   if rows_per else "")
    wgd = c.get("leaf_weight_grad_dtype")
    out = [
        "## 6. Peers: leaf's distillation loss beside Liger-Kernel's",
        "",
        "Command" + ("s" if len(commands) > 1 else "") + ": "
        + "; ".join(f"`{x}`" for x in commands) + "  ",
        f"Run: {machine(r['machine'])}.",
        "",
        "The inputs and the quantity of section 2 (the student's final hidden states and output "
        "weight with gradient, the teacher's hidden states and output weight; the forward KL "
        "from teacher to student summed over every target position, temperature 1, and its "
        "gradient with respect to the hidden states and the weight). **leaf**: "
        "`fused_distill_loss` with its defaults, the trainer's default path: the products with "
        "the output layers (both models' logits, the gradients of the hidden states and of the "
        "weight) in the inputs' dtype, each chunk's softmax, divergence and logit gradient in "
        f"float32{leaf_chunks}"
        + (f", the weight's gradient summed over the chunks in the weight's dtype "
           f"(`kd_weight_grad_dtype: {wgd}`)" if wgd == "weight" else
           (f", the weight's gradient summed in {wgd}" if wgd else ""))
        + ". **Liger**: Liger-Kernel "
        f"{c.get('liger_version', '')}'s `LigerFusedLinearJSDLoss` with `beta=0` (its forward "
        "KL), hard-loss weight 0, the same target positions (label -100 elsewhere), "
        f"`{c['liger_mode']}`, in chunks of {c['chunk_size']} positions, everything in the "
        "inputs' dtype; it divides by the number of target positions, so its loss is "
        "multiplied back to the sum (one scalar product). Each side and "
        "repetition runs in its own process: two warm-up calls at the measured vocabulary "
        "(one and two chunks long, so that no timed call compiles), then one measured call "
        f"(peak memory above the inputs and wall time); {c['reps']} repetitions, the sides' "
        "order reversed each time; median [min-max]. Checks before any timing: at "
        f"{' x '.join(map(str, c['check']))} (T x V x H) the obvious loss, leaf and Liger agree "
        "within " + ", ".join(f"{v:.1e} in {d}" for d, v in c["checks"].items())
        + " (relative norm of loss and both gradients); every measured call's loss and gradient "
        "norms are compared with leaf's (last column).",
        "",
        "| T x V (hidden) | dtype | peak MiB leaf | peak MiB Liger | memory leaf / best peer "
        "| time s leaf | time s Liger | time leaf / best peer | largest relative difference "
        "| load average (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(r["rows"], key=lambda x: (x["tokens"] * x["vocab"], x["dtype"] != "float32"))
    for row in rows:
        out.append(
            f"| {row['tokens']} x {row['vocab']} ({row['hidden']}) | {row['dtype']} "
            f"| {f(row['peak_mib']['fused'], 0)} | {f(row['peak_mib']['liger'], 0)} "
            f"| {f(row['mem_over_best_peer'])} | {f(row['time_s']['fused'])} "
            f"| {f(row['time_s']['liger'])} | {f(row['time_over_best_peer'])} "
            f"| {row['max_rel_diff']:.1e} | {min(row['load_1min']):.1f}-{max(row['load_1min']):.1f} |")
    target = [x for x in rows if (x["tokens"], x["vocab"]) == (4096, 128256)]
    if target:
        out += ["", "| target at 4096 x 128256 | measured | target | |", "|---|---|---|---|"]
        for row in target:
            for key, name in (("mem_over_best_peer", "peak memory"), ("time_over_best_peer",
                                                                       "time")):
                out.append(f"| {name}, leaf / best peer, {row['dtype']} (hidden {row['hidden']}) "
                           f"| {f(row[key])} | <= 1.0 | {verdict(row[key]['median'], 1.0, False)} |")
    by = {(x["tokens"], x["vocab"], x["dtype"]): x for x in rows}
    pairs = [(a, by[(a["tokens"], a["vocab"], "bfloat16")]) for a in rows
             if a["dtype"] == "float32" and (a["tokens"], a["vocab"], "bfloat16") in by]
    if pairs:
        a, b = pairs[-1]

        def said(row: dict) -> str:
            mem, tim = row["mem_over_best_peer"], row["time_over_best_peer"]
            return (f"peak {mem['median']:.2f}x Liger's and time {tim['median']:.2f}x "
                    f"[{tim['min']:.2f}-{tim['max']:.2f}]")

        out += ["", (
            f"What the figures say: at {a['tokens']} x {a['vocab']} leaf's {said(a)} in float32, "
            f"its {said(b)} in bfloat16. Liger's own bfloat16 call took "
            f"{b['time_s']['liger']['median'] / a['time_s']['liger']['median']:.2f}x its float32 "
            f"one, leaf's {b['time_s']['fused']['median'] / a['time_s']['fused']['median']:.2f}x. "
            "leaf keeps the chunk's softmax, divergence and logit gradient in float32 (the "
            "divergence of two close distributions is a small difference of large "
            "log-probabilities) and runs the products, which dominate the time, in the inputs' "
            "dtype; a chunk's float32 buffers are allocated once per call and reused by every "
            "chunk (a fresh tensor of a chunk's size per chunk is mapped anew and pays its page "
            "faults each time). " + "".join(
                f"At {x['tokens']} x {x['vocab']} in {x['dtype']} leaf's time was "
                f"{x['time_over_best_peer']['median']:.2f}x Liger's (not a target shape; not "
                "investigated further). " for x in rows
                if x["time_over_best_peer"]["median"] > 1.0 and x not in target)
            + "The last column is how far Liger's loss and gradient norms land from leaf's on the "
            "same inputs; the table below measures both against an exact loss. Time differences "
            "within the [min-max] ranges are this shared machine's noise; a GPU run "
            "(`scripts/gpu_check.sh`, which runs `bench_kl.py --peers` when Liger is carried) "
            "measures time better.")]
    out += render_peers_memory(memory)
    if precision:
        out += render_precision(precision)
    out += ["", "Not run:"]
    out += [f"- {name}: {why}." for name, why in r.get("not_run", {}).items()]
    out += ["", f"Memory: {rows[0]['mem_method']}.", ""]
    return out


def render_peers_memory(m: dict | None) -> list[str]:
    """Section 6's memory-only table at 8192 x 152064 (``results/peers_memory.json``, built by
    the commands of :data:`peers_memory.PLAN`); where the file is absent, the commands alone."""
    shape = f"{PM.SHAPE[0]} x {PM.SHAPE[1]}"
    out = ["", f"**Memory only at {shape}** (hidden {PM.SHAPE[2]}), float32 and bfloat16.", ""]
    why = (f"At {shape} one call of one side takes many minutes on these shared CPUs (section "
           "2), too long for interleaved timed repetitions, so this shape is measured for peak "
           "memory only: each side and dtype in its own fresh process (the "
           "same two warm-up calls, then one measured call; peak memory above the inputs), one "
           "command per side and dtype, all adding to one results file (`--append` skips what "
           "the file holds, so a command cut short resumes, and refuses a file from another "
           "leaf commit or other settings). The sides run at different times under different "
           "loads, so their times are not compared: **time at this shape is for a GPU** "
           "(`scripts/gpu_check.sh`, or `bench_kl.py --peers --device cuda --sizes "
           f"{'x'.join(map(str, PM.SHAPE))}`).")
    if not m:
        return out + [why + " Not measured yet; the commands, then "
                      "`python benchmarks/make_performance.py --write --render-only`:", "",
                      "```bash", *PM.PLAN, "```"]
    rows = PM.rows(m)
    st = m["settings"]
    out += ["Commands: " + "; ".join(f"`{x}`" for x in m["commands"]) + "  "]
    if m.get("machine"):
        out += [f"Run (the last command): {machine(m['machine'])}.", ""]
    out += [why + f" {st['reps']} repetition(s) per side, leaf code at commit "
            f"`{st['leaf_commit'][:12]}`"
            + (" with uncommitted changes" if "+dirty" in st["leaf_commit"] else "")
            + f", torch threads {st['threads']}. Checks first, in every "
            f"command: at {' x '.join(map(str, st['check']))} (T x V x H) the obvious loss, leaf "
            "and Liger agree within " + ", ".join(f"{v:.1e} in {d}"
                                                   for d, v in m["checks"].items())
            + " (relative norm of loss and both gradients); each measured call's loss and "
            "gradient norms are compared with leaf's (last column).", "",
            "| T x V (hidden) | dtype | peak MiB leaf | peak MiB best peer (Liger) "
            "| memory leaf / best peer | Liger ran | largest relative difference "
            "| load average (1 min) |",
            "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        out.append(
            f"| {row['tokens']} x {row['vocab']} ({row['hidden']}) | {row['dtype']} "
            f"| {C.fmt(row['peak_mib']['fused'], 0)} | {C.fmt(row['peak_mib']['liger'], 0)} "
            f"| {C.fmt(row['mem_over_best_peer']) if row['mem_over_best_peer'] else 'not resolved'}"
            f" | {', '.join(row['modes'])} "
            f"| {row['max_rel_diff']:.1e} | {row['load_1min'][0]:.1f}-{row['load_1min'][1]:.1f} |")
    done = {(r["tokens"], r["vocab"], r["hidden"], r["dtype"]) for r in rows}
    half = sorted({f"{e['tokens']} x {e['vocab']} {e['dtype']} "
                   f"({'leaf' if e['side'] == 'fused' else e['side']} only)"
                   for e in m["entries"] if e["peak_mib"]
                   and (e["tokens"], e["vocab"], e["hidden"], e["dtype"]) not in done})
    if half:
        out += ["", "Measured on one side only so far: " + "; ".join(half) + "."]
    if rows:
        lo, hi = (f(t for r in rows for t in r["call_s"]) for f in (min, max))
        took = (f"{lo:.0f}-{hi:.0f} s" if hi < 120 else f"{lo / 60:.0f}-{hi / 60:.0f} minutes")
        out += ["", f"Memory: {rows[0]['mem_method']}. One measured call took {took} here, "
                "over all sides and dtypes (not a comparison)."]
    return out


def render_precision(p: dict) -> list[str]:
    """How far each bfloat16 side lands from the exact loss (``precision_kl.py``)."""
    names = {"floor": "exact, rounded to bfloat16 once (the floor)",
             "weight": "leaf, weight's gradient summed in bfloat16 (default)",
             "float32": "leaf, summed in float32 (`kd_weight_grad_dtype: float32`)",
             "liger": "Liger (eager)"}
    out = ["", "**Precision in bfloat16** (which sum of the weight's gradient is the default).",
           "",
           f"Command: `{p['command']}`  ",
           f"Run: {machine(p['machine'])}.",
           "",
           "bfloat16 inputs as above; the reference is the same bfloat16 values computed in "
           "float64. Each cell: relative error (`||x - exact|| / ||exact||`) of the loss, the "
           "hidden states' gradient and the weight's gradient.",
           "",
           "| T x V (hidden), leaf's chunks | " + " | ".join(
               names.get(k, k) for k in p["rows"][0]["error"]) + " |",
           "|---|" + "---|" * len(p["rows"][0]["error"])]
    for row in p["rows"]:
        out.append(f"| {row['tokens']} x {row['vocab']} ({row['hidden']}), {row['chunks']} | "
                   + " | ".join(", ".join(f"{x:.1e}" for x in v)
                                for v in row["error"].values()) + " |")
    last = max(p["rows"], key=lambda x: x["chunks"] * x["vocab"])
    e = last["error"]
    liger = (f", Liger's {e['liger'][2]:.1e}" if "liger" in e else "")
    out += ["", (
        "The default sums the weight's gradient in the weight's own dtype: for a float32 or "
        "mixed-precision student (`bf16: true`, float32 master weights) that is float32 anyway, "
        "and for a bfloat16 weight a float32 sum "
        f"lowered the weight gradient's error only from {e['weight'][2]:.1e} to "
        f"{e['float32'][2]:.1e} at {last['tokens']} x {last['vocab']} ({last['chunks']} chunks"
        f"{liger}; the rounding floor {e['floor'][2]:.1e}: most of the error is the bfloat16 "
        "logits', which both share) for twice the sum's memory (`V x H` x 4 bytes instead of 2) "
        "and a float32 product; `kd_weight_grad_dtype: float32` (or `weight_grad_dtype=` of "
        "`fused_distill_loss`) buys that difference. The loss and the hidden states' gradient "
        "do not depend on it; their error is the float32 divergence's, well below Liger's.")]
    return out


def render_distill_peers(r: dict) -> list[str]:
    """Section 6, the trainer: leaf's DistillTrainer beside TRL's GKD trainer."""
    c, f = r["config"], C.fmt
    return [
        "### The trainer beside TRL's",
        "",
        f"Command: `{r['command']}`  ",
        f"Run: {machine(r['machine'])}.",
        "",
        "KD w/o mask (the original rows only, lambda 1) with leaf's `DistillTrainer` (loss path "
        f"`{c['leaf_loss_path']}`) and with TRL {c['trl_version']}'s `GKDTrainer` in its "
        "off-policy setting (`lmbda=0`: no student generation; `beta=0`: forward KL; "
        "temperature 1; no sequence-level KD; gradient checkpointing and bf16 off on both), on the "
        "same rows in the same batches (leaf's sampler's, given to TRL's data loader), the same "
        f"student (hidden {c['student'][0]}, {c['student'][1]} layers) and teacher (hidden "
        f"{c['teacher'][0]}, {c['teacher'][1]} layers), vocabulary {c['vocab']}, batch "
        f"{c['batch_size']}, {c['steps']} AdamW steps ({c['real_tokens_per_run']} real tokens) "
        "per run. Each side and repetition runs in its own process (a one-step warm-up run, then "
        f"the measured run), {c['reps']} repetitions alternating the order; median [min-max]. "
        f"Both sides' first-run training losses agree within {r['loss_rel_diff']:.1e} "
        f"(leaf {r['train_loss']['leaf']:.6f}, TRL {r['train_loss']['trl']:.6f}). Load average "
        f"(1 min) during the runs {r['load_1min'][0]:.1f}-{r['load_1min'][1]:.1f}.",
        "",
        "| side | real tokens/s | peak memory (MiB) |",
        "|---|---|---|",
        f"| leaf `DistillTrainer` | {f(r['tokens_per_s']['leaf'], 0)} | {f(r['peak_mib']['leaf'], 0)} |",
        f"| TRL `GKDTrainer` (off-policy) | {f(r['tokens_per_s']['trl'], 0)} "
        f"| {f(r['peak_mib']['trl'], 0)} |",
        "",
        "| ratio | measured |",
        "|---|---|",
        f"| tokens/s, leaf / TRL | {f(r['tokens_per_s_over_trl'])} |",
        f"| peak memory, leaf / TRL | {f(r['mem_over_trl'])} |",
        "",
        f"Memory: {r['mem_method']} (the measured run: forward, backward and optimizer steps).",
        "",
    ]


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


def machine(m: dict) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return (f"{m['date_utc']}; {m['cpu']} ({m['cores']} cores, torch threads "
            f"{m['torch_threads']}, load average at the end {m['load_average']}){gpu}; device "
            f"`{m['device']}`; Python {m['python']}, torch {m['torch']}, transformers "
            f"{m['transformers']}")


def render_detect(r: dict) -> list[str]:
    c, b = r["config"], r["config"]["batch_size"]
    f = C.fmt
    out = [
        "## 1. Detection: saliency of every prompt token",
        "",
        f"Command: `{r['command']}`  ",
        f"Run: {machine(r['machine'])}.",
        "",
        f"Model: Llama architecture, random weights, vocabulary {c['vocab']}, hidden {c['hidden']}, "
        f"{c['layers']} layers, {c['params'] / 1e6:.1f}M parameters, dtype {c.get('dtype', 'float32')}. "
        f"Data: {c['samples']} random sequences, instruction {c['inst'][0]}-{c['inst'][1]} tokens + "
        f"response {c['resp'][0]}-{c['resp'][1]} tokens ({c['tokens']} tokens in all). "
        f"leaf's batch size {b} (`leaf detect` defaults to 1 on a CPU, 4 on a GPU). Largest difference between the "
        f"two sides' saliencies, relative to each sample's largest value: {r['max_rel_err']:.1e}. "
        f"{c['reps']} interleaved repetitions; median [min-max].",
        "",
        "| side | time per pass (s) | samples/s | peak memory (MiB) |",
        "|---|---|---|---|",
        f"| reference loop (batch 1, train mode, `loss.backward()`) | {f(r['time_s']['reference'])} "
        f"| {f(r['samples_per_s']['reference'])} | {f(r['peak_mib']['reference'], 0)} |",
        f"| leaf, batch 1 | {f(r['time_s']['leaf_b1'])} | {f(r['samples_per_s']['leaf_b1'])} "
        f"| {f(r['peak_mib']['leaf_b1'], 0)} |",
        f"| leaf, batch {b} | {f(r['time_s']['leaf_batch'])} "
        f"| {f(r['samples_per_s']['leaf_batch'])} | {f(r['peak_mib']['leaf_batch'], 0)} |",
        f"| plain forward, batch 1 (no grad) | {f(r['time_s']['forward_b1'])} "
        f"| {f(r['samples_per_s']['forward_b1'])} | |",
        f"| plain forward, batch {b} (no grad) | {f(r['time_s']['forward_batch'])} "
        f"| {f(r['samples_per_s']['forward_batch'])} | |",
        "",
        "| ratio | measured | target | |",
        "|---|---|---|---|",
        f"| throughput, leaf batch {b} / reference | {f(r['speedup'])} | >= 3 "
        f"| {verdict(r['speedup']['median'], 3, True)} |",
        f"| throughput, leaf batch 1 / reference | {f(r['speedup_b1'])} | >= 3 "
        f"| {verdict(r['speedup_b1']['median'], 3, True)} |",
        f"| peak memory, leaf batch 1 / reference | {f(r['mem_ratio_b1'])} | <= 0.6 "
        f"| {verdict(r['mem_ratio_b1']['median'], 0.6, False)} |",
        f"| peak memory, leaf batch {b} / reference (batch 1) | {f(r['mem_ratio_batch'])} | | |",
        f"| time, leaf / plain forward, batch {b} | {f(r['leaf_over_forward'])} | <= 2.5 "
        f"| {verdict(r['leaf_over_forward']['median'], 2.5, False)} |",
        f"| time, leaf / plain forward, batch 1 | {f(r['leaf_over_forward_b1'])} | <= 2.5 "
        f"| {verdict(r['leaf_over_forward_b1']['median'], 2.5, False)} |",
        "",
        f"Memory: {r['mem_method']}, one fresh process per side and repetition.",
        "",
    ]
    return out


def _cell(row: dict, side: str, key: str, digits: int) -> str:
    if side in row.get("not_run", {}):
        return f"not run: {row['not_run'][side]}"
    value = row[key].get(side)
    if value is None:
        return ""
    return C.fmt(value, digits) if isinstance(value, dict) else f"{value:.{digits}f}"


def _ratio(row: dict, key: str) -> str:
    return f"{row[key]:.3f}" if key in row else ""


def render_kl(r: dict) -> list[str]:
    c = r["config"]
    rows = sorted(r["rows"], key=lambda row: row["tokens"] * row["vocab"])
    out = [
        "## 2. The distillation loss: from hidden states, from full logits, the obvious way",
        "",
        *([f"Command: `{r['command']}`  "] if "commands" not in r else [
            "Commands (the plan's shapes and sides were run in parts, some of them at the same "
            "time, to fit the time available; each row says which sides it holds): "
            + "; ".join(f"`{x}`" for x in r["commands"]) + "  "]),
        f"Run: {machine(r['machine'])}.",
        "",
        "Each side starts from the student's final hidden states and output weight (both with "
        "gradient) and the teacher's final hidden states and output weight, computes the forward "
        "KL summed over every position and its gradient with respect to the student's hidden "
        "states and output weight: **obvious**, both models' full logits then "
        "`token_divergence` over all positions at once; **chunked**, the same full logits then "
        f"`chunked_divergence` in chunks of {c['chunk_size']} positions (leaf's previous path, "
        "`kd_loss_path: logits`); **fused**, `fused_distill_loss` (`kd_loss_path: hidden`, "
        f"the default): {c['chunk_size']} positions at a time through both output layers, "
        "the divergence and its gradient in closed form, no `tokens x vocabulary` tensor. "
        f"Inputs in {c['dtype']}; the losses compute in float32. Peak memory is what the loss "
        "and its backward add above the inputs; the output weight's gradient (as large as the "
        "weight; training needs it anyway) is included on every side. Each side runs in its own "
        f"process, {c['reps']} timed call(s) each (the first also measured for memory), the "
        "sides of a shape one after the other, their order reversed from one shape to the next. "
        "Checks: at "
        f"{' x '.join(map(str, c['check']))} (T x V x H) the three sides' losses and gradients "
        f"agree within {c['check_max_rel_diff']:.1e} (relative norm); at every shape below, "
        "their losses and gradient norms agree within the last column.",
        "",
        "| T x V (hidden) | one T x V float32 tensor (MiB) | peak MiB obvious | peak MiB chunked "
        "| peak MiB fused | memory chunked / obvious | memory fused / obvious | time s obvious "
        "| time s chunked | time s fused | time chunked / obvious | time fused / obvious "
        "| fused / chunked (memory, time) | largest relative difference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        both = (f"{row['fused_over_chunked_mem']:.3f}, {row['fused_over_chunked_time']:.3f}"
                if "fused_over_chunked_mem" in row else "")
        out.append(
            f"| {row['tokens']} x {row['vocab']} ({row['hidden']}) "
            f"| {row['tokens'] * row['vocab'] * 4 / 2**20:.0f} "
            + "".join(f"| {_cell(row, s, 'peak_mib', 0)} " for s in ("obvious", "chunked", "fused"))
            + f"| {_ratio(row, 'chunked_mem_ratio')} | {_ratio(row, 'fused_mem_ratio')} "
            + "".join(f"| {_cell(row, s, 'time_s', 1)} " for s in ("obvious", "chunked", "fused"))
            + f"| {_ratio(row, 'chunked_time_ratio')} | {_ratio(row, 'fused_time_ratio')} "
            f"| {both} | {row['max_rel_diff']:.1e} |"
        )
    head = [row for row in rows if (row["tokens"], row["vocab"]) == (4096, 128256)
            and "fused_mem_ratio" in row]
    if head:
        h = head[0]
        out += [
            "",
            "| target at 4096 x 128256 | measured | target | |",
            "|---|---|---|---|",
            f"| peak memory, fused / obvious | {h['fused_mem_ratio']:.3f} | <= 0.1 "
            f"| {verdict(h['fused_mem_ratio'], 0.1, False)} |",
            f"| time, fused / obvious | {h['fused_time_ratio']:.3f} | <= 1.0 "
            f"| {verdict(h['fused_time_ratio'], 1.0, False)} |",
        ]
    missing = [p for p in c.get("planned", []) if p != "step"
               and not any([row["tokens"], row["vocab"], row["hidden"]] == p for row in rows)]
    if "step" in c.get("planned", []) and not r.get("step"):
        missing.append("the whole training step")
    if missing:
        out += ["", "Planned but not finished in the time available: " + ", ".join(
            p if isinstance(p, str) else f"{p[0]} x {p[1]} (hidden {p[2]})" for p in missing)
            + "."]
    step = r.get("step") or {}
    if step:
        sc = c["step"]
        f0 = step["fused"]
        out += [
            "",
            f"**One whole training step** (`Trainer.training_step`: student forward, teacher "
            f"forward, loss, backward; optimizer state, equal on every side, not included) of a "
            f"Llama-shaped student (hidden {sc['student'][0]}, {sc['student'][1]} layers, "
            f"{f0['student_params'] / 1e6:.0f}M parameters, most of them in the embeddings and "
            f"output layer) with a teacher of {f0['teacher_params'] / 1e6:.0f}M parameters "
            f"(hidden {sc['teacher'][0]}), vocabulary {sc['vocab']}, one row of {sc['tokens']} "
            "tokens (the last three quarters are targets), float32, forward KL. "
            "*fused*: leaf's `DistillTrainer` (default `kd_loss_path`: hidden); *chunked*: the "
            "same with `kd_loss_path: logits`; *obvious*: a textbook KD `Trainer` (full logits "
            "of both models, `token_divergence` of the target positions). One step per side in "
            "its own process after a 64-token warm-up step; the three losses agree.",
            "",
            "| side | peak memory (MiB) | ratio to obvious | time (s) |",
            "|---|---|---|---|",
        ]
        for k in ("obvious", "chunked", "fused"):
            if k in step:
                out.append(f"| {k} | {step[k]['peak_mib']:.0f} "
                           f"| {step[k]['peak_mib'] / step['obvious']['peak_mib']:.3f} "
                           f"| {step[k]['time_s']:.1f} |")
    method = next((row["mem_method"] for row in rows if "mem_method" in row), "")
    out += ["", f"Memory: {method}.", ""]
    return out


def render_generate(r: dict, quick: dict | None = None) -> list[str]:
    c, m = r["config"], r["config"]["model"]
    f = C.fmt
    b = c["batch_size"]
    labels = {"leaf": f"leaf `HFGenerator`, batch {b}",
              "plain": f"plain `model.generate`, batch {b}",
              "leaf_b1": "leaf `HFGenerator`, batch 1", "vllm": "vLLM (leaf's `VLLMGenerator`)"}
    out = [
        "## 4. Generation (screening, verification, evaluation)",
        "",
        f"Command: `{r['command']}`  ",
        f"Run: {machine(r['machine'])}.",
        "",
        f"Model: Llama architecture initialised at random from a config (not trained weights), "
        f"shaped like SmolLM2-135M: vocabulary {m['vocab']}, hidden {m['hidden']}, "
        f"{m['layers']} layers, {m['heads']} heads ({m['kv_heads']} key-value), "
        f"{c['params'] / 1e6:.0f}M parameters, {c['dtype']}. {c['prompts']} prompts of "
        f"{c['prompt_tokens'][0]}-{c['prompt_tokens'][1]} tokens (chat template included), "
        f"greedy, at most {c['max_new_tokens']} new tokens, the same stop ids on every side. "
        "Tokens/s counts generated tokens up to each row's stop token; "
        f"{c['reps']} interleaved repetitions after a warm-up; median [min-max]. Outputs equal "
        f"to plain `generate`'s: leaf {r['same_output_as_plain']['leaf']} of "
        f"{r['same_output_as_plain']['of']}, leaf batch 1 {r['same_output_as_plain']['leaf_b1']} of "
        f"{r['same_output_as_plain']['of']}.",
        "",
        "| side | generated tokens | time (s) | tokens/s |",
        "|---|---|---|---|",
    ]
    for k in r["tokens_per_s"]:
        out.append(f"| {labels.get(k, k)} | {r['generated_tokens'].get(k, '')} "
                   f"| {f(r['time_s'][k])} | {f(r['tokens_per_s'][k], 1)} |")
    g = r["gen_over_plain"]
    out += [
        "",
        "| ratio | measured | target | |",
        "|---|---|---|---|",
        f"| tokens/s, leaf / plain `generate`, batch {b} | {f(g, 3)} | >= 0.95 "
        f"| {gen_verdict(g)} |",
        f"| tokens/s, leaf batch 1 / plain `generate` batch {b} | {f(r['b1_over_plain'], 3)} | | |",
        "",
    ]
    if quick is not None:
        out += render_generate_quick(r, quick)
    return out


SPREAD = 1.3  # a ratio whose repetitions spread wider than this (max / min) tells nothing


def gen_verdict(g: dict) -> str:
    """met / missed, or why the range cannot say."""
    spread = g["max"] / g["min"]
    if spread > SPREAD:
        return f"not telling: max / min {spread:.2f}"
    return verdict(g["median"], 0.95, True)


def render_generate_quick(full: dict, r: dict) -> list[str]:
    """Section 4's current figure: the quick shape on an idle machine
    (``results/generate_quick.json``), below the full-size table."""
    c, m, f = r["config"], r["config"]["model"], C.fmt
    g = r["gen_over_plain"]
    fg = full["gen_over_plain"]
    load = full["machine"]["load_average"]
    return [
        "**The current generation figure** (the quick shape, on a nearly idle machine):",
        "",
        f"Command: `{r['command']}`  ",
        f"Run: {machine(r['machine'])}.",
        "",
        f"Model: Llama architecture at random, vocabulary {m['vocab']}, hidden {m['hidden']}, "
        f"{m['layers']} layers ({c['params'] / 1e6:.2f}M parameters), {c['dtype']}; "
        f"{c['prompts']} prompts of {c['prompt_tokens'][0]}-{c['prompt_tokens'][1]} tokens, "
        f"batch {c['batch_size']}, greedy, at most {c['max_new_tokens']} new tokens; "
        f"{c['reps']} interleaved repetitions after a warm-up; median [min-max]. Outputs equal "
        f"to plain `generate`'s: {r['same_output_as_plain']['leaf']} of "
        f"{r['same_output_as_plain']['of']}.",
        "",
        "| ratio | measured | max / min | target | |",
        "|---|---|---|---|---|",
        f"| tokens/s, leaf / plain `generate`, batch {c['batch_size']} | {f(g, 2)} "
        f"| {g['max'] / g['min']:.2f} | >= 0.95 | {gen_verdict(g)} |",
        "",
        f"This is the figure to quote. The full-size table above was measured at a load average "
        f"of about 8-12 (it ended at {load}), and its range ({fg['min']:.2f}-{fg['max']:.2f}, "
        f"max / min {fg['max'] / fg['min']:.1f}) says nothing either way: other jobs' load "
        "came and went during runs of minutes. It stays until it is rerun on an idle machine "
        "(`python benchmarks/make_performance.py --write --only generate`).",
        "",
    ]


def render_distill(r: dict) -> list[str]:
    c = r["config"]
    f = C.fmt
    tps, real, padded = r["tokens_per_s"], r["real_tokens_per_run"], r["padded_tokens_per_run"]
    out = [
        "## 3. Distillation training steps",
        "",
        f"Command: `{r['command']}`  ",
        f"Run: {machine(r['machine'])}.",
        "",
        f"Student: Llama architecture, hidden {c['student'][0]}, {c['student'][1]} layers "
        f"({c['student_params'] / 1e6:.1f}M parameters); teacher hidden {c['teacher'][0]}, "
        f"{c['teacher'][1]} layers ({c['teacher_params'] / 1e6:.1f}M); vocabulary {c['vocab']}. "
        f"{c['rows']} rows ({c['counterfactual_rows']} counterfactual), lengths log-normal "
        f"(median {c['length_median']}, longest {c['length_max']}); batch {c['batch_size']}, "
        f"{c['steps']} AdamW steps per run, {c['reps']} interleaved runs per side after one "
        f"warm-up run; pad-to-max `max_length` = {c['max_length']}. Tokens/s counts real "
        f"(non-padding) tokens; median [min-max]. leaf's loss path: "
        + (f"`{c['leaf_loss_path']}`." if "leaf_loss_path" in c else
           "from full logits (this run predates `kd_loss_path`; section 2 measures the "
           "default path's loss)."),
        "",
        "| side | real tokens/s | real tokens per run | positions computed per run |",
        "|---|---|---|---|",
    ]
    labels = {"leaf": "leaf `DistillTrainer` (counterfactual term, dynamic padding)",
              "plain_kd": "plain KD `Trainer` (obvious KL, dynamic padding, same rows)",
              "pad_to_max": "authors' style (obvious KL, every batch padded to max_length)"}
    for k in ("leaf", "plain_kd", "pad_to_max"):
        out.append(f"| {labels[k]} | {f(tps[k], 0)} | {real[k]} | {padded[k]} |")
    out += [
        "",
        "| ratio | measured | target | |",
        "|---|---|---|---|",
        f"| tokens/s, leaf / plain KD | {f(r['leaf_vs_plain_kd'])} | >= 0.95 "
        f"| {verdict(r['leaf_vs_plain_kd']['median'], 0.95, True)} |",
        f"| tokens/s, leaf / pad to max_length | {f(r['leaf_vs_pad_to_max'])} | >= 2 "
        f"| {verdict(r['leaf_vs_pad_to_max']['median'], 2.0, True)} |",
        "",
    ]
    return out


def render_dp(r: dict) -> list[str]:
    c = r["config"]
    f = C.fmt
    half = max(c["threads"] // 2, 1)
    return [
        "## 5. Data-parallel stage 1: `leaf detect` on 2 processes against 1",
        "",
        f"Command: `{r['command']}`  ",
        f"Run: {machine(r['machine'])}.",
        "",
        f"The real command, cold (a fresh Python process, both models loaded, the output "
        f"written and, with 2 processes, merged), on the same {c['samples']} samples "
        f"(instruction and response {c['words'][0]}-{c['words'][1]} words each, "
        f"{c['rows']} score rows): `python -m leaf.cli detect` with {c['threads']} threads "
        f"against `torchrun --nproc_per_node 2 -m leaf.cli detect` with {half} thread(s) per "
        f"process, the same CPU cores either way. Teacher: Llama architecture, hidden "
        f"{c['teacher'][0]}, {c['teacher'][1]} layers; student hidden {c['student'][0]}, "
        f"{c['student'][1]} layers; random weights, leaf's tiny test tokenizer. Both sides' "
        f"outputs were checked to be the same bytes first. Samples/s counts the whole wall "
        f"time, start-up and model loading included. {c['reps']} interleaved repetitions; "
        "median [min-max].",
        "",
        "| side | wall time (s) | samples/s |",
        "|---|---|---|",
        f"| 1 process x {c['threads']} threads | {f(r['time_s']['dp1'])} "
        f"| {f(r['samples_per_s']['dp1'])} |",
        f"| 2 processes x {half} thread(s) (torchrun) | {f(r['time_s']['dp2'])} "
        f"| {f(r['samples_per_s']['dp2'])} |",
        f"| control: 1 process x {half} thread(s) | {f(r['time_s']['dp1_1thread'])} "
        f"| {f(r['samples_per_s']['dp1_1thread'])} |",
        "",
        f"Samples/s, 2 processes / 1 process of {c['threads']} threads: "
        f"**{f(r['dp2_over_dp1'])}**; 2 processes / 1 process of {half} thread(s) "
        f"(the control: what each rank has): {f(r['dp2_over_dp1_1thread'])}.",
        "",
    ]


INTRO = """# Performance

*Generated by `python benchmarks/make_performance.py --write` from `benchmarks/results/*.json`; do not
edit by hand (the prose lives in that script).*

leaf's heavy steps, each measured against the way the authors' released code, the obvious loss
or a plain `transformers` loop does the same work, on the same model, data, dtype and thread
count. Every benchmark
warms up first, then alternates the sides (A B, B A, ...) over several repetitions so that load
from other processes falls on all of them, and reports the median with the [min-max] range over
repetitions. Ratios, not absolute figures, are what these CPU runs can tell: **the machine was
a 2-core virtual machine shared with other busy processes (load average between about 1 and
12 during these runs; each table prints it)**, so absolute times are slow and noisy.

Section 5 measures data-parallel detection (two processes against one) the same way.

Reproduce any table with the command printed beside it; `--quick` runs a smaller version
(about a minute of CPU time; longer in wall time on a loaded machine) and prints its headline
ratios as its last line (`RATIO name=value ...`). Regenerate this page with `python benchmarks/make_performance.py --write` (without `--write`, a
check: everything goes to a temporary directory and the checkout stays as it was).

Peak memory on CPU is measured in a fresh child process per side and repetition: the peak
resident set size (`VmHWM`, reset through `/proc/self/clear_refs` just before the measured call)
minus the resident size just before it, with glibc told to map every block of 128 KiB or more
on its own (`MALLOC_MMAP_THRESHOLD_=131072`) so that freed tensors leave the resident set. A
tiny call first pays one-off initialisations. On CUDA the same children use
`torch.cuda.max_memory_allocated()`.
"""

FAITHFUL = """### How the reference sides are written (and why they are not handicapped)

- **Detection reference** (`reference_saliency` in `bench_detect.py`): as in the released code,
  one sample at a time, the model in train mode (dropout is 0 in Llama configs, so it computes
  the same function), the embedding output with `retain_grad()`, the loss from the model's own
  `labels=` path (mean cross-entropy over the response tokens, the same loss leaf uses), a
  plain `loss.backward()` (which also fills every parameter's `.grad`), the embedding
  gradient's L2 norm, then `model.zero_grad()`. Both sides' saliencies are checked to agree
  before timing. It has no padding, no attention mask and runs SDPA's causal kernel. Both
  sides run float32 here (the authors ran float16 on GPUs: `--dtype float16` there).
- **KL reference** (`obvious` in `bench_kl.py`): both models' logits from their hidden states
  (`F.linear`), then `leaf.distill.losses.token_divergence` (float32 log-softmax of both sides,
  `p_T (log p_T - log p_S)` summed over the vocabulary) over all positions at once, summed,
  `backward()`: the usual way to write it (torch's `F.kl_div` on the two log-softmaxes peaked
  at about 7 instead of 8 `T x V` tensors in a side check at 1024 x 32000: the same class).
- **Generation reference** (`plain` in `bench_generate.py`): the prompts in their given order,
  `batch_size` at a time, the tokenizer's own left padding, one `model.generate` call per batch
  with the same greedy settings and stop ids as leaf, `decode` of the new tokens.
- **Distillation references** (`bench_distill.py`): a textbook knowledge-distillation
  `Trainer` subclass (student forward, teacher forward under `no_grad`, the obvious forward KL
  of the target positions, averaged), with leaf's dynamic-padding collator (*plain KD*) or with
  every batch padded to `max_length` (*authors' style*; the teacher's logits cut to the
  student's vocabulary). `max_length` is the longest row rounded up to 64, the most favourable
  value for that side (the paper used 4096). All sides train the same rows in the same order.
"""

def quick_gen_text(q: dict) -> str:
    g = q["gen_over_plain"]
    load = q["machine"]["load_average"].split()[0]
    return (f"On a nearly idle machine (load average {load}), over {q['config']['reps']} "
            f"interleaved repetitions of the quick shape, it ran at {g['median']:.2f}x "
            f"[{g['min']:.2f}-{g['max']:.2f}] a plain `generate` loop's tokens/s at the same "
            f"batch size, with the same outputs for {q['same_output_as_plain']['leaf']} of "
            f"{q['same_output_as_plain']['of']} prompts"
            + (": leaf adds nothing that slows generation (it sorts the prompts by length; the "
               "plain loop takes them in their given order). "
               if g["min"] >= 0.95 else ". "))


def findings(res: dict) -> list[str]:
    """The prose under the tables; numbers are read from the results where they are quoted."""
    out = ["## What the numbers say, and what was changed", ""]
    kl = res.get("kl")
    if kl:
        rows = sorted(kl["rows"], key=lambda r: r["tokens"] * r["vocab"])

        def each(key: str) -> str:
            return ", ".join(f"{r[key]:.3f} at {r['tokens']} x {r['vocab']}"
                             for r in rows if key in r) or "not measured"

        text = (
            "**Distillation loss (new: `leaf.distill.fused`, the trainer's default "
            "`kd_loss_path`).** The trainer's previous loss, `chunked_divergence`, computes the "
            "divergence chunk by chunk and the student's logit gradient during the forward pass "
            "(its first version, which recomputed each chunk in backward and built a full-size "
            "zero gradient per chunk, was slower and heavier than the obvious loss), but it "
            "starts from the two models' full logits: two `T x V` tensors plus the student's "
            "`T x V` gradient, a floor that no chunking of the divergence removes. Its memory "
            f"against the obvious loss: {each('chunked_mem_ratio')}. The fused loss starts from "
            "the final hidden states instead: each chunk of 256 positions goes through both "
            "output layers, the divergence's gradient with respect to the chunk's logits is "
            "written in closed form (forward KL: `t (p_S - p_T)`) and turned at once into the "
            "hidden states' gradient and the output weight's, and the chunk is dropped. Its "
            f"memory against the obvious loss: {each('fused_mem_ratio')}; what remains is the "
            "output weight's gradient (`V x H` float32, 1002 MiB at 128256 x 2048, produced by "
            "every side) and about four `256 x V` float32 temporaries, a fixed amount, so the "
            "ratio falls as the sequence grows. Time against the obvious loss: "
            f"{each('fused_time_ratio')} (chunked: {each('chunked_time_ratio')}). Every side "
            "does the same four large matrix products (two output layers forward, the hidden "
            "states' and the weight's gradients), which dominate the time on a CPU; the fused "
            "loss does them 256 rows at a time, and its weight gradient is accumulated over the "
            "chunks (`V x H` read and written once per chunk). Against the chunked loss, fused "
            f"used {each('fused_over_chunked_mem')} of its memory and "
            f"{each('fused_over_chunked_time')} of its time. Each time here is one call of "
            "several minutes per side, the sides one after the other on a machine whose load "
            "average moved between about 8 and 12 (other jobs), so time differences of a few "
            "tens of percent between sides are within this machine's noise; the quick mode "
            "(interleaved repetitions, smaller shapes) and a GPU run (command below) measure "
            "time better."
        )
        not_run = [(r, why) for r in rows for side, why in r.get("not_run", {}).items()
                   if side == "obvious"]
        for r, why in not_run:
            text += (f" At {r['tokens']} x {r['vocab']} the obvious loss was not run: it "
                     f"{why} (its peak holds about eight `T x V` float32 tensors).")
        step = kl.get("step") or {}
        if step.get("fused") and step.get("obvious"):
            text += (
                " In a whole training step of a small Llama-shaped student, where the output "
                "layer and the logits dominate, the step's peak memory was "
                f"{step['fused']['peak_mib'] / step['obvious']['peak_mib']:.2f}x the textbook "
                "KD trainer's with the default path and "
                f"{step['chunked']['peak_mib'] / step['obvious']['peak_mib']:.2f}x with "
                "`kd_loss_path: logits`."
            )
        out += [text, ""]
    det = res.get("detect")
    if det:
        b = det["config"]["batch_size"]
        dc = det["config"]
        shape_ratio = dc["params"] / (dc["tokens"] / dc["samples"] * dc["vocab"])
        deep = det.get("deep")
        deep_txt = ""
        if deep:
            d = deep["config"]
            deep_txt = (
                f" With a deeper model of {d['params'] / 1e6:.0f}M parameters (memory only, one "
                f"sample of {d['tokens']} tokens) the ratio is "
                f"{deep['mem_ratio_b1']['median']:.2f} "
                f"({deep['peak_mib']['leaf_b1']['median']:.0f} vs "
                f"{deep['peak_mib']['reference']['median']:.0f} MiB)."
            )
        out += [
            "**Detection (changed in `leaf.detect.saliency`).** leaf takes gradients with "
            "respect to the input embeddings only, in eval mode. On a CPU its throughput advantage "
            "is bounded by arithmetic: the reference does a forward pass, an input-gradient pass "
            "and a weight-gradient pass (about 3 forward-pass costs), leaf the first two (about "
            f"2), so about 1.5x is the ceiling; measured {det['speedup_b1']['median']:.2f}x at "
            f"batch 1 and {det['speedup']['median']:.2f}x at batch {b}, and "
            f"{det['leaf_over_forward_b1']['median']:.2f}x a plain forward pass at batch 1. "
            "Batching buys nothing on a CPU (one 500-token sequence already fills the matrix "
            f"kernels) and costs padding and memory traffic on {b}x larger tensors, so `leaf "
            "detect --batch-size` now defaults to 1 on a CPU (4 on a GPU). The >= 3x target "
            "assumes a GPU, where a batch of one leaves most of the device idle; the GPU command "
            "below measures it.",
            "",
            "What changed: `saliency_and_nll` used to run the whole model and hold the "
            "`[B, T, V]` logits, their response rows' log-softmax, a no-grad log-softmax of all "
            "of them for the per-token NLL and, in backward, full-size zero-filled gradients of "
            "the row selection and of the `[:, :-1]` shift. It now runs the model body "
            "(`get_decoder()`) once, applies the output layer (`get_output_embeddings()`) to the "
            "response positions 256 at a time, taking each chunk's loss gradient with respect to "
            "the hidden states at once, computes the other positions' NLL the same way under "
            "`no_grad` (padding never goes through the output layer), and pushes the hidden-state "
            "gradient through the body with one `autograd.grad(hidden, embeds, grad_hidden)`. No "
            "`[tokens, V]` tensor is held, so leaf's peak is set by the decoder's activations and "
            "one chunk of logits. Models whose logits are not `lm_head(hidden)` (Gemma-2's "
            "soft-capping, Cohere's logit scale, Granite's logit scaling, any architecture not on "
            "a short list of checked ones) keep the full-logits path; both paths give the same "
            "numbers (tests compare them at rtol 1e-5). "
            f"Peak memory at batch 1 is now {det['mem_ratio_b1']['median']:.2f}x the reference's "
            f"({det['peak_mib']['leaf_b1']['median']:.0f} vs "
            f"{det['peak_mib']['reference']['median']:.0f} MiB); the reference's extra cost is "
            "one gradient per parameter, so the ratio falls as parameters outnumber one sample's "
            f"logits (here {shape_ratio:.1f}x; Llama-3.2-1B about 20x).{deep_txt} "
            "`--llama-1b --device cuda` measures the real shape.",
            "",
        ]
    gen = res.get("generate")
    if gen:
        c = gen["config"]
        tps = gen["tokens_per_s"]
        g = gen["gen_over_plain"]["median"]
        per_sample = gen["time_s"]["leaf"]["median"] / c["prompts"]
        out += [
            "**Generation (measured for the first time).** leaf's generator is a thin layer over "
            "`model.generate`: it renders the chat template, sorts the prompts by length so that "
            "each batch pads little, passes the template's end-of-turn token as a stop id and "
            "cuts each answer at its first stop token. "
            + (quick_gen_text(res["generate_quick"]) if res.get("generate_quick") else "")
            + "At the full size and the same batch size it ran at "
            f"{g:.2f}x a plain `generate` loop's tokens/s, with the same outputs for "
            f"{gen['same_output_as_plain']['leaf']} of "
            f"{gen['same_output_as_plain']['of']} prompts; at batch 1 it ran at "
            f"{gen['b1_over_plain']['median']:.2f}x. The repetitions' ratios ranged "
            f"{gen['gen_over_plain']['min']:.2f}-{gen['gen_over_plain']['max']:.2f} (other "
            "jobs' load came and went during runs of minutes), so that run cannot tell the two "
            "sides apart. "
            + "On this loaded 2-core machine a SmolLM2-135M-shaped model generated "
            f"{tps['leaf']['median']:.1f} tokens/s at batch {c['batch_size']}: "
            f"{per_sample:.1f} s of wall time per sample for up to {c['max_new_tokens']} new "
            "tokens (the whole run's time over its prompts). A screening run that took about 20 s "
            "per sample on such a machine (a real 135M model, longer prompts, other jobs running) "
            "is in line with this: the model on a busy CPU. Longer prompts (chat "
            "templates with a system prompt, few-shot examples) add prefill time per row. On a "
            "GPU, `--backend vllm` (`VLLMGenerator`) is the fast path; `bench_generate.py "
            "--device cuda --vllm` measures it (not run here: no GPU).",
            "",
        ]
    dis = res.get("distill")
    if dis:
        c = dis["config"]
        out += [
            "**Distillation.** Per real token, leaf's trainer with its counterfactual term ran at "
            f"{dis['leaf_vs_plain_kd']['median']:.2f}x a textbook KD trainer on the same rows "
            "(its chunked loss is cheaper than the obvious one), and at "
            f"{dis['leaf_vs_pad_to_max']['median']:.2f}x the pad-to-`max_length` loop. That "
            "second gain is the ratio of padded to real positions, which depends on the data and "
            f"on `max_length`: here `max_length` = {c['max_length']} is the longest row rounded "
            "up (the most favourable choice for the reference) and the lengths vary about as "
            "much as distillation answers do (log-normal, sigma "
            f"{c['sigma']}); with the paper's `max_length` of 4096 and answers of a few hundred "
            "tokens the gap grows in proportion. leaf pads each batch to its own longest row; "
            "batching rows of similar length would remove more padding, but leaf's mixing "
            "sampler forms the batches (`train_sampling_strategy` is refused), so it is not "
            "offered (not measured here).",
            "",
        ]
    dp = res.get("dp")
    if dp:
        ratio, ratio_1 = dp["dp2_over_dp1"]["median"], dp["dp2_over_dp1_1thread"]["median"]
        rate = dp["samples_per_s"]
        threads = dp["config"]["threads"]
        two_vs_one = rate["dp1"]["median"] / rate["dp1_1thread"]["median"]
        load = dp["machine"]["load_average"].split()[0]
        text = (
            "**Data-parallel detection.** Two single-threaded processes ran `leaf detect` at "
            f"{ratio:.2f}x the samples/s of one process with {threads} threads, and at "
            f"{ratio_1:.2f}x one process with one thread (the control: what each rank has; 2 "
            "would be perfect scaling on 2 free cores). ")
        if two_vs_one < 1:
            text += (f"The first ratio is flattering: the {threads}-thread process ran at only "
                     f"{two_vs_one:.2f}x the one-thread process's speed on these small models. ")
        if ratio_1 < 1:
            text += (
                "Against the control, two processes were *slower* here: the two cores were "
                f"already busy with other work (load average {load} at the end), so the second "
                "process found no idle core to use, while it still paid its own start-up "
                "(Python, torch and both models, inside every time; the detection work itself "
                "is a few tens of seconds) and the merge. This run shows that the outputs match "
                "byte for byte, not a speed-up: that needs idle cores or GPUs, which this "
                "machine did not have. ")
        text += ("On GPUs, expect about the number of model copies that fit, less start-up "
                 "and the merge ([scaling.md](scaling.md) explains how to size ranks); not "
                 "measured here.")
        out += [text, ""]
    return out


GPU = """## Running on a GPU

**The first GPU: `scripts/gpu_check.sh`.** One prepared command of about five minutes on one
GPU, with no network: it installs leaf (`pip install --no-deps --no-build-isolation -e .`), runs
the GPU-marked tests (`pytest -m gpu`: the fused loss, saliency and a bf16 training step on the
device against float32), the fused loss against the obvious and chunked ones at 8192 x 152064 in
bfloat16 (and beside Liger-Kernel's chunked loss, `bench_kl.py --peers`, when its wheel is
carried), detection on a Llama-3.2-1B-shaped random model against the authors' loop, and
`leaf run --quick` in bfloat16 on CUDA with a random-weight SmolLM2-shaped pair built from
configs (`benchmarks/random_pair.py`), plus stage 1 on two ranks when more than one GPU is
visible; it writes `gpu_check.md` (device name, versions, each step's status, time and ratio
lines) and every step's log under `--out` (default `$OUT` or `gpu-check/`). The machine needs
torch, transformers, accelerate and peft; the few small wheels it may lack travel in `wheels/`
(gitignored), made where the package index is reachable:

```bash
pip download --no-deps -d wheels pytest pluggy iniconfig \\
    math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2 \\
    liger-kernel                                  # optional: the peers step
bash scripts/gpu_check.sh --out gpu-check        # on the GPU machine, from the checkout
bash scripts/gpu_check.sh --dry-run --out /tmp/x  # the same steps on a CPU, toy shapes
```

`--dry-run` is part of the test suite (`tests/test_gpu_check.py`), so the script stays runnable.

Every script takes `--device cuda` (memory then comes from `torch.cuda.max_memory_allocated`
in the same fresh child processes; times are synchronised). On a GPU the absolute figures are
meaningful; report them with the device name the page prints.

```bash
python benchmarks/bench_detect.py --device cuda --llama-1b --dtype float16   # Llama-3.2-1B shape
python benchmarks/bench_detect.py --device cuda                               # the CPU sizes
python benchmarks/bench_kl.py --device cuda --dtype bfloat16
python benchmarks/bench_distill.py --device cuda
python benchmarks/bench_generate.py --device cuda --dtype bfloat16 --vllm     # adds vLLM (pip install vllm)
python benchmarks/bench_dp.py --device cuda           # detect, 2 ranks against 1 (GPUs split)
python benchmarks/make_performance.py --device cuda --write   # all of them, then rewrite this page
```

No GPU was available for this page's runs.
"""


def load_results(*dirs: Path) -> dict[str, dict]:
    """``name -> results`` from ``<dir>/<name>.json``, a later directory's file winning."""
    out = {}
    for d in dirs:
        for n in NAMES + EXTRA:
            if (d / f"{n}.json").exists():
                out[n] = json.loads((d / f"{n}.json").read_text())
    return out


def load_quick(*dirs: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for d in dirs:
        if (d / "quick.json").exists():
            out.update(json.loads((d / "quick.json").read_text()))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--render-only", action="store_true", help="only render the page")
    p.add_argument("--only", choices=NAMES, action="append", help="run only these benchmarks")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick-only", action="store_true",
                   help="run only the quick variants (their table), keep the full results")
    p.add_argument("--write", action="store_true",
                   help="regenerate the tracked files: benchmarks/results/ and docs/PERFORMANCE.md "
                        "(without it everything goes to --out)")
    p.add_argument("--out", type=Path, default=None,
                   help="where a run without --write puts its results and page (default: a new "
                        "temporary directory)")
    args = p.parse_args(argv)
    if args.write and args.out is not None:
        p.error("--out and --write exclude each other (--write writes the tracked files)")
    if args.write:
        results_dir, page = RESULTS, PAGE
    else:
        out = args.out or Path(tempfile.mkdtemp(prefix="leaf-performance-"))
        results_dir, page = out / "results", out / "PERFORMANCE.md"
    results_dir.mkdir(parents=True, exist_ok=True)
    quick = load_quick(RESULTS, results_dir)
    if not args.render_only:
        extra = ["--device", args.device]
        new_quick = load_quick(results_dir)
        for name in args.only or NAMES:
            if not args.quick_only:
                run(name, extra, results_dir)
            new_quick[name] = {**run_quick(name, extra),
                               "machine": C.machine_info(args.device, 1)}
        (results_dir / "quick.json").write_text(json.dumps(new_quick, indent=1))
        quick.update(new_quick)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render_page(load_results(RESULTS, results_dir), quick))
    print(f"wrote {page}" + ("" if args.write else
                             f" and {results_dir} (the tracked files are untouched; "
                             "--write regenerates them)"))
    return 0


def render_page(results: dict[str, dict], quick: dict[str, dict]) -> str:
    lines = [INTRO]
    renderers = {"detect": render_detect, "kl": render_kl, "distill": render_distill,
                 "generate": render_generate, "dp": render_dp, "peers": render_peers,
                 "distill_peers": render_distill_peers}
    beside = {"generate": ("generate_quick",), "peers": ("peers_precision", PM.NAME)}
    for name in NAMES:
        if name in results and name in beside:
            lines += renderers[name](results[name], *(results.get(b) for b in beside[name]))
        elif name in results:
            lines += renderers[name](results[name])
        else:
            lines += [f"## {name}", "", "(no results yet: run `python benchmarks/make_performance.py "
                      f"--write --only {name}`)", ""]
    if quick:
        lines += ["## Quick mode (for checking a rerun)", "",
                  "Each script's `--quick` variant: smaller shapes, so its ratios are not the full "
                  "ones above, but a rerun should land near these. Wall time on the machine "
                  "described above (the load average at the end of each run is shown).", "",
                  "| command | wall time (s) | load average | last line |", "|---|---|---|---|"]
        for name in NAMES:
            if name in quick:
                q = quick[name]
                lines.append(f"| `{q['command'].strip()}` | {q['wall_s']:.0f} "
                             f"| {q['machine']['load_average']} | `{q['last_line']}` |")
        lines.append("")
    lines += [FAITHFUL, *findings(results)]
    lines += [GPU]
    return "\n".join(lines)

if __name__ == "__main__":
    sys.exit(main())
