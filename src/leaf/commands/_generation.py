"""Generation flags shared by ``leaf screen`` and ``leaf eval``."""

from __future__ import annotations

import argparse

from leaf.commands._options import add_device, add_dtype, build
from leaf.evaluate.generation import BACKENDS
from leaf.stages.options import GenerationOptions

D = GenerationOptions  # the defaults of the flags are the options' own


def add_generation_arguments(parser: argparse.ArgumentParser,
                             max_new_tokens: int = D.max_new_tokens) -> None:
    g = parser.add_argument_group("generation")
    g.add_argument("--batch-size", type=int, default=D.batch_size,
                   help=f"prompts per generate call ({D.batch_size})")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                   help=f"longest answer in tokens ({max_new_tokens})")
    add_dtype(g, D.dtype)
    add_device(g, D.device)
    g.add_argument("--backend", choices=BACKENDS, default=D.backend,
                   help=f"hf (transformers generate) or vllm (optional extra; default {D.backend})")
    g.add_argument("--temperature", type=float, default=D.temperature,
                   help=f"0 = greedy (default {D.temperature:g})")
    g.add_argument("--top-p", type=float, default=D.top_p,
                   help=f"nucleus sampling when sampling (default {D.top_p:g})")
    g.add_argument("--seed", type=int, default=D.seed, help=f"sampling seed (default {D.seed})")


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    """The :class:`GenerationOptions` the generation flags describe."""
    return build(GenerationOptions, batch_size=args.batch_size,
                 max_new_tokens=args.max_new_tokens, dtype=args.dtype, device=args.device,
                 backend=args.backend, temperature=args.temperature, top_p=args.top_p,
                 seed=args.seed)
