"""Generation flags shared by ``leaf screen`` and ``leaf eval``."""

from __future__ import annotations

import argparse

from leaf.evaluate.generation import BACKENDS, GenerationSettings
from leaf.models import DTYPES


def add_generation_arguments(parser: argparse.ArgumentParser, max_new_tokens: int = 512) -> None:
    g = parser.add_argument_group("generation")
    g.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (8)")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                   help=f"longest answer in tokens ({max_new_tokens})")
    g.add_argument("--dtype", choices=DTYPES, default="float32", help="weights dtype (float32)")
    g.add_argument("--device", default="auto",
                   help="auto (cuda if available, several GPUs shared), cpu, cuda, cuda:N")
    g.add_argument("--backend", choices=BACKENDS, default="hf",
                   help="hf (transformers generate) or vllm (optional extra)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling when sampling")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")


def settings_from(args: argparse.Namespace) -> GenerationSettings:
    if args.batch_size < 1 or args.max_new_tokens < 1:
        from leaf.errors import LeafError

        raise LeafError("--batch-size and --max-new-tokens must be at least 1")
    return GenerationSettings(
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        temperature=args.temperature, top_p=args.top_p, seed=args.seed, progress=False,
    )


def chunk_size(args: argparse.Namespace) -> int:
    """Problems generated between two resume points: one batch for hf; vLLM schedules its own
    batches and is only fast when it sees many prompts at once."""
    return args.batch_size if args.backend == "hf" else max(args.batch_size, 256)
