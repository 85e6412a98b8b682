"""A randomly initialised teacher/student pair built from a config, for runs that may not download.

    python benchmarks/random_pair.py OUT [--shape smollm2|toy]

``smollm2``: the student shaped like SmolLM2-135M (vocabulary 49152, hidden 576, 30 layers,
9 heads, 3 key-value heads, tied embeddings), the teacher like SmolLM2-360M (hidden 960,
32 layers, 15 heads, 5 key-value heads), saved in bfloat16. ``toy``: the same layout at a few
hundred thousand parameters (the CPU dry run of ``scripts/gpu_check.sh``). Both use the
``digit_sum`` testbed's tokenizer and chat template, so ``leaf run`` can use the testbed's data;
the vocabulary beyond the tokenizer's few hundred tokens is never read (the output layer keeps
its full width, which is what the loss's cost depends on). Writes ``OUT/teacher`` and
``OUT/student``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _common  # noqa: F401  (puts this checkout's src/ first on sys.path)

SHAPES = {
    "smollm2": {"vocab": 49152, "dtype": "bfloat16",
                "student": dict(hidden=576, layers=30, heads=9, kv=3, intermediate=1536),
                "teacher": dict(hidden=960, layers=32, heads=15, kv=5, intermediate=2560)},
    "toy": {"vocab": 2048, "dtype": "float32",
            "student": dict(hidden=64, layers=2, heads=4, kv=2, intermediate=128),
            "teacher": dict(hidden=96, layers=2, heads=4, kv=2, intermediate=192)},
}


def save_model(path: Path, shape: dict, vocab: int, dtype: str, tokenizer, seed: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv"], max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--shape", choices=sorted(SHAPES), default="smollm2")
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    from leaf.testbed.assets import model_dir

    spec = SHAPES[args.shape]
    tokenizer = AutoTokenizer.from_pretrained(model_dir("digit_sum", "student"))
    for seed, role in enumerate(("student", "teacher")):
        save_model(args.out / role, spec[role], spec["vocab"], spec["dtype"], tokenizer, seed)
    print(f"wrote {args.out}/teacher and {args.out}/student ({args.shape} shape)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
