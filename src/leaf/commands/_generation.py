"""Generation flags shared by ``leaf screen`` and ``leaf eval``."""

from __future__ import annotations

import argparse

from leaf.commands._options import build
from leaf.evaluate.generation import BACKENDS
from leaf.models import DTYPES
from leaf.stages.options import GenerationOptions

D = GenerationOptions  # the defaults of the flags are the options' own


def add_generation_arguments(parser: argparse.ArgumentParser,
                             max_new_tokens: int = D.max_new_tokens) -> None:
    g = parser.add_argument_group("generation")
    g.add_argument("--batch-size", type=int, default=D.batch_size,
                   help=f"prompts per generate call ({D.batch_size})")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                   help=f"longest answer in tokens ({max_new_tokens})")
    g.add_argument("--dtype", choices=DTYPES, default=D.dtype, help=f"weights dtype ({D.dtype})")
    g.add_argument("--device", default=D.device,
                   help="auto (cuda if available, several GPUs shared), cpu, cuda, cuda:N")
    g.add_argument("--backend", choices=BACKENDS, default=D.backend,
                   help="hf (transformers generate) or vllm (optional extra)")
    g.add_argument("--temperature", type=float, default=D.temperature,
                   help="0 = greedy (default)")
    g.add_argument("--top-p", type=float, default=D.top_p, help="nucleus sampling when sampling")
    g.add_argument("--seed", type=int, default=D.seed, help="sampling seed")


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    """The :class:`GenerationOptions` the generation flags describe."""
    return build(GenerationOptions, batch_size=args.batch_size,
                 max_new_tokens=args.max_new_tokens, dtype=args.dtype, device=args.device,
                 backend=args.backend, temperature=args.temperature, top_p=args.top_p,
                 seed=args.seed)
