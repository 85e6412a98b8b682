"""leaf convert-model: write a GGUF model as a normal Hugging Face directory."""

from __future__ import annotations

import argparse

from leaf.models import convert_gguf

NAME = "convert-model"
HELP = "write a .gguf model as a Hugging Face directory (config, safetensors, tokenizer)"
DESCRIPTION = """\
Reads  SOURCE: a .gguf file, or a directory holding one .gguf (and no config.json).
Writes --out DIR: config.json, model.safetensors (the weights dequantised to --dtype),
       generation_config.json, the tokenizer and its chat template. Plain transformers loads
       DIR (AutoModelForCausalLM.from_pretrained(DIR)); DIR appears only when complete.

Every leaf command also takes the .gguf directly (--teacher, --student, --model, configs);
converting once saves the dequantisation at every load. Needs the gguf package:
pip install "leaf-distill[gguf]". (Python: leaf.models.convert_gguf.)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help=".gguf file, or a directory holding one")
    parser.add_argument("--out", required=True, help="directory to write (must not exist, or "
                                                     "be empty)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the written weights (float32)")


def run(args: argparse.Namespace) -> int:

    out = convert_gguf(args.source, args.out, args.dtype)
    print(f"leaf convert-model: wrote {out} (config.json, model.safetensors, tokenizer)")
    return 0
