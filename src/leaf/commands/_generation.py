"""Generation flags shared by ``leaf screen`` and ``leaf eval``: GenerationOptions' fields."""

from __future__ import annotations

import argparse

from leaf.commands._options import add_device, add_dtype, add_option, build
from leaf.stages.options import GenerationOptions

G = GenerationOptions


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("generation")
    add_option(g, G, "batch_size")
    add_option(g, G, "max_new_tokens")
    add_dtype(g, G)
    add_device(g, G)
    add_option(g, G, "backend")
    add_option(g, G, "temperature")
    add_option(g, G, "top_p")
    add_option(g, G, "seed")


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    """The :class:`GenerationOptions` the generation flags describe."""
    return build(GenerationOptions, batch_size=args.batch_size,
                 max_new_tokens=args.max_new_tokens, dtype=args.dtype, device=args.device,
                 backend=args.backend, temperature=args.temperature, top_p=args.top_p,
                 seed=args.seed)
