"""Generation throughput: leaf's generator vs a plain ``model.generate`` call vs batch 1.

leaf answers instructions with :class:`leaf.evaluate.generation.HFGenerator` (``leaf screen``,
``leaf prune``'s verification and ``leaf eval`` all use it). This benchmark gives it and a plain
``transformers`` loop the same model, the same prompts (rendered with the same chat template), the
same batch size and the same settings (greedy, ``max_new_tokens``, the same stop ids, left
padding) and counts generated tokens per second:

- **leaf**: ``HFGenerator(model, tokenizer, GenerationSettings(batch_size=B, ...)).generate``.
- **plain**: the prompts in their given order, ``B`` at a time, ``tokenizer(..., padding=True)``
  then ``model.generate(**batch, max_new_tokens=..., do_sample=False, eos_token_id=stop ids)``,
  then ``batch_decode`` of the new tokens: what one writes without leaf.
- **leaf_b1**: leaf's generator with batch size 1.

The model is a Llama-architecture causal LM initialised at random from a config shaped like
SmolLM2-135M (hidden 576, 30 layers, 9 heads, 3 key-value heads, vocabulary 49152; a smaller one
in ``--quick``), float32, with a small locally built BPE tokenizer and its Llama-3-style chat
template (ids beyond the tokenizer decode to nothing; throughput does not depend on the text).
Generated tokens are counted up to and including each row's stop token. Sides are timed in
one process, interleaved, after a warm-up; median [min-max] over repetitions.

``--vllm`` (GPU only) adds vLLM through :class:`leaf.evaluate.generation.VLLMGenerator` on the
same model saved to a temporary directory.

Run: ``python benchmarks/bench_generate.py [--quick] [--device cuda] [--vllm]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import _common as C

SMOL = dict(vocab=49152, hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536)
FULL = dict(model=SMOL, prompts=16, batch_size=8, max_new_tokens=64, words=(30, 160), reps=3,
            reps_b1=3)
QUICK = dict(model=dict(vocab=8000, hidden=128, layers=4, heads=4, kv_heads=2, intermediate=344),
             prompts=16, batch_size=4, max_new_tokens=48, words=(20, 80), reps=10, reps_b1=2)
WORDS = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "his", "an", "were", "are", "which", "this", "be", "number", "sum", "digits", "answer", "rumor", "query", "total", "first", "second", "value", "step", "then", "add"]


def make_model(m: dict, device, dtype):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=m["vocab"], hidden_size=m["hidden"], intermediate_size=m["intermediate"],
        num_hidden_layers=m["layers"], num_attention_heads=m["heads"],
        num_key_value_heads=m["kv_heads"], max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=3, pad_token_id=4,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    model.generation_config.eos_token_id = 3
    model.generation_config.pad_token_id = 4
    return model


def make_instructions(n: int, words: tuple[int, int], seed: int = 1) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))) + " ?"
            for _ in range(n)]


def count_new(seqs, stop_ids) -> int:
    """Generated tokens per row up to and including its first stop token, summed."""
    total = 0
    for seq in seqs:
        n = len(seq)
        for pos, tok in enumerate(seq):
            if tok in stop_ids:
                n = pos + 1
                break
        total += n
    return total


def plain_generate(model, tokenizer, texts, batch_size, max_new_tokens, stop_ids, device):
    """The loop one writes without leaf; returns (texts, generated token count)."""
    import torch

    out_texts, tokens = [], 0
    for lo in range(0, len(texts), batch_size):
        enc = tokenizer(texts[lo:lo + batch_size], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        tokens += count_new(new, stop_ids)
        for seq in new:
            cut = next((i for i, t in enumerate(seq) if t in stop_ids), len(seq))
            out_texts.append(tokenizer.decode(seq[:cut], skip_special_tokens=True))
    return out_texts, tokens


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small settings, about a minute on 2 cores")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for all sides")
    p.add_argument("--reps", type=int)
    p.add_argument("--vllm", action="store_true", help="also vLLM (needs a GPU and vllm)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.reps:
        cfg["reps"] = args.reps
    torch, device = C.setup_torch(args.threads, args.device)
    import logging

    import transformers

    from leaf.evaluate.generation import (
        GenerationSettings,
        HFGenerator,
        VLLMGenerator,
        prompts_for,
        stop_token_ids,
    )
    from leaf.testbed.tiny import build_tokenizer

    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    tokenizer = build_tokenizer("llama3")
    tokenizer.padding_side = "left"
    model = make_model(cfg["model"], device, getattr(torch, args.dtype))
    instructions = make_instructions(cfg["prompts"], cfg["words"])
    texts = prompts_for(tokenizer, instructions)
    prompt_tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    stop_ids = stop_token_ids(tokenizer, model.generation_config)
    b, new = cfg["batch_size"], cfg["max_new_tokens"]

    def settings(batch):
        return GenerationSettings(max_new_tokens=new, batch_size=batch, progress=False)

    leaf_gen, leaf_b1 = HFGenerator(model, tokenizer, settings(b)), \
        HFGenerator(model, tokenizer, settings(1))
    outputs: dict[str, list[str]] = {}
    counts: dict[str, int] = {}

    def side(name):
        def call():
            if name == "plain":
                outputs[name], counts[name] = plain_generate(model, tokenizer, texts, b, new,
                                                             stop_ids, device)
            else:
                gen = leaf_gen if name == "leaf" else leaf_b1
                outputs[name] = gen.generate(instructions)
        return call

    sides = {"leaf": side("leaf"), "plain": side("plain"), "leaf_b1": side("leaf_b1")}
    # tokens each leaf side generated: its own ids, recorded by wrapping model.generate once
    recorded: dict[str, int] = {}
    real_generate = model.generate

    def recording(name):
        def wrapped(*a, **k):
            out = real_generate(*a, **k)
            width = k["input_ids"].shape[1]
            recorded[name] = recorded.get(name, 0) + count_new(out[:, width:].tolist(), stop_ids)
            return out
        return wrapped

    for name in ("leaf", "leaf_b1"):
        model.generate = recording(name)
        sides[name]()
        model.generate = real_generate
    sides["plain"]()
    counts.update(recorded)
    same = sum(a == c for a, c in zip(outputs["leaf"], outputs["plain"]))
    same_b1 = sum(a == c for a, c in zip(outputs["leaf_b1"], outputs["plain"]))
    # the headline pair (leaf and plain generate at the same batch size) alternates over
    # cfg["reps"] repetitions, so that load from other processes falls on both; batch 1 is
    # slower and measured fewer times
    cpu: dict[str, list[float]] = {}
    times = C.interleaved({k: sides[k] for k in ("leaf", "plain")}, cfg["reps"], device,
                          warmup=0, cpu=cpu)
    times.update(C.interleaved({"leaf_b1": sides["leaf_b1"]}, cfg.get("reps_b1", cfg["reps"]),
                               device, warmup=0))
    tps = {k: [counts[k] / t for t in v] for k, v in times.items()}
    result = {
        "name": "generate",
        "machine": C.machine_info(args.device, args.threads),
        "command": "python benchmarks/bench_generate.py" + (" --quick" if args.quick else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (f" --dtype {args.dtype}" if args.dtype != "float32" else "")
        + (f" --reps {args.reps}" if args.reps else ""),
        "config": {**cfg, "params": C.n_params(model), "dtype": args.dtype,
                   "prompt_tokens": [min(prompt_tokens), max(prompt_tokens)]},
        "generated_tokens": counts,
        "same_output_as_plain": {"leaf": same, "leaf_b1": same_b1, "of": len(texts)},
        "time_s": {k: C.summary(v) for k, v in times.items()},
        "tokens_per_s": {k: C.summary(v) for k, v in tps.items()},
        "gen_over_plain": C.summary(C.ratios(tps["leaf"], tps["plain"])),
        "b1_over_plain": C.summary(C.ratios(tps["leaf_b1"], tps["plain"])),
    }
    if args.device == "cpu":  # the same calls' CPU time: what the other jobs' load leaves out
        result["cpu_time_s"] = {k: C.summary(v) for k, v in cpu.items()}
        result["gen_over_plain_cpu_time"] = C.summary(C.ratios(
            [counts["leaf"] / t for t in cpu["leaf"]], [counts["plain"] / t for t in cpu["plain"]]))
    if args.vllm:
        if args.device != "cuda":
            raise SystemExit("--vllm needs --device cuda")
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            vgen = VLLMGenerator(tmp, tokenizer, settings(len(texts)), dtype=args.dtype)
            vtimes = C.interleaved({"vllm": lambda: vgen.generate(instructions)}, cfg["reps"],
                                   device, warmup=1)
        result["time_s"]["vllm"] = C.summary(vtimes["vllm"])
        result["tokens_per_s"]["vllm"] = C.summary([counts["plain"] / t for t in vtimes["vllm"]])
        result["vllm_note"] = "tokens counted as the plain side's (vLLM's own count may differ)"
    print(json.dumps(result["config"]))
    for k in result["tokens_per_s"]:
        print(f"{k:8s} {counts.get(k, counts['plain'])} tokens, time {C.fmt(result['time_s'][k])} s,"
              f" tokens/s {C.fmt(result['tokens_per_s'][k], 1)}")
    print(f"outputs equal to plain generate's: leaf {same}/{len(texts)}, leaf batch 1 "
          f"{same_b1}/{len(texts)}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    g = result["gen_over_plain"]
    print(f"leaf / plain generate, tokens per second of wall time: {C.fmt(g)} over {g['n']} "
          f"interleaved repetitions (max / min {g['max'] / g['min']:.2f}); load average at the "
          f"end {result['machine']['load_average']}")
    line = {"b1_over_plain": result["b1_over_plain"]["median"], "gen_over_plain": g["median"],
            "gen_over_plain_min": g["min"], "gen_over_plain_max": g["max"]}
    if "gen_over_plain_cpu_time" in result:
        c = result["gen_over_plain_cpu_time"]
        print(f"leaf / plain generate, tokens per second of this process's CPU time: {C.fmt(c)} "
              f"(max / min {c['max'] / c['min']:.2f})")
        line.update(gen_over_plain_cpu_time=c["median"], gen_over_plain_cpu_time_min=c["min"],
                    gen_over_plain_cpu_time_max=c["max"])
    print(C.ratio_line(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
