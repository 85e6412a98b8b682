"""Make the real-model check's student: the teacher re-quantised to fewer bits.

    python scripts/real_model/make_student.py TEACHER_DIR OUT_DIR [--bits 3] [--group 32]

Every weight matrix of the decoder layers (attention and MLP projections) is rounded to
``bits``-bit signed integers with one absmax scale per group of ``group`` consecutive inputs
(round-to-nearest, symmetric), then stored dequantised in float32. Embeddings and norms are kept.
The result is the same architecture and tokenizer as the teacher (so logit distillation works)
but a noisier model: right on some problems, wrong on others -- the kind of student LeaF needs.
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def fake_quantise(weight: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    rows, cols = weight.shape
    if cols % group:
        raise ValueError(f"{cols} inputs are not a multiple of the group size {group}")
    w = weight.float().reshape(rows, cols // group, group)
    top = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / top
    q = torch.clamp(torch.round(w / scale), -top - 1, top)
    return (q * scale).reshape(rows, cols).to(weight.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("out")
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--group", type=int, default=32)
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.float32)
    n = 0
    with torch.no_grad():
        for module in model.model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(fake_quantise(module.weight, args.bits, args.group))
                n += 1
    model.save_pretrained(args.out)
    AutoTokenizer.from_pretrained(args.teacher).save_pretrained(args.out)
    print(f"student: {n} decoder matrices at {args.bits} bits (groups of {args.group}) -> "
          f"{args.out}")


if __name__ == "__main__":
    main()
