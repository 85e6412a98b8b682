"""``leaf attention``: share of attention that response tokens pay to confounder spans."""

from __future__ import annotations

import argparse
from pathlib import Path

from leaf.commands._options import MODEL_HELP, add_device, add_dtype, model_ref
from leaf.data.jsonl import finite_json, iter_jsonl, write_json_atomic
from leaf.errors import LeafError
from leaf.models import resolve_device
from leaf.stages.options import GenerationOptions  # --device and --dtype mean what they mean there

NAME = "attention"
HELP = "measure how much attention response tokens pay to confounder spans, per layer"
DESCRIPTION = """\
Reads a model (and optionally more models to compare, e.g. a KD and a LeaF student) and a JSONL
file whose samples carry confounder spans:
  --spans planted  samples with a 'planted' field (testbed): {"misleading": [...],
                   "distractor": [...]} (--planted-part picks one), a list of [start, end)
                   spans in the instruction, or {"instruction": [...], "response": [...]}
  --spans pruned   a counterfactuals.jsonl from `leaf prune`: the 'pruned' spans of each
                   original's counterfactuals, measured on the original text
For every sample and layer it takes the attention of each response token (eager attention,
averaged over heads), sums it over the tokens that overlap a span, and averages over response
tokens; then over layers and samples. 'uniform' is the share a uniform causal attention would give.
Writes --out (JSON: spans, data, models[{model, label, per_layer, mean, uniform, n_items,
per_item}]) and prints a table (one row per model).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=model_ref, metavar="MODEL",
                   help=f"the model measured: {MODEL_HELP}")
    p.add_argument("--compare", nargs="*", default=[], metavar="MODEL", type=model_ref,
                   help="more models measured on the same spans (e.g. KD vs LeaF students)")
    p.add_argument("--labels", nargs="*", default=None,
                   help="names for --model and --compare models, in order (default: dir names)")
    p.add_argument("--data", required=True, help="samples with 'planted' or counterfactuals.jsonl")
    p.add_argument("--spans", choices=("planted", "pruned"), default="pruned",
                   help="where the confounder spans come from (see above; default pruned)")
    p.add_argument("--planted-part", choices=("distractor", "misleading"), default="distractor",
                   help="with testbed spans: the whole distractor sentence or its misleading part "
                        "(default distractor)")
    p.add_argument("--verified-only", action="store_true",
                   help="with --spans pruned: only spans of counterfactuals with verified true")
    p.add_argument("--limit", type=int, default=None,
                   help="measure at most this many items (default: all)")
    p.add_argument("--out", default="attention.json",
                   help="JSON file to write (default attention.json)")
    add_device(p, GenerationOptions)
    add_dtype(p, GenerationOptions)


def run(args: argparse.Namespace) -> int:
    from leaf.evaluate.attention_share import (  # heavy: numpy, torch at run time
        compare_models,
        format_table,
        planted_items,
        pruned_items,
    )

    rows = list(iter_jsonl(args.data))
    if args.spans == "planted":
        items = planted_items(rows, args.data, part=args.planted_part)
    else:
        items = pruned_items(rows, args.data, verified_only=args.verified_only)
    if not items:
        raise LeafError(f"{args.data}: no {args.spans} spans found")
    if args.limit is not None:
        items = items[: args.limit]

    models = [args.model, *args.compare]
    labels = args.labels or [Path(m).name or m for m in models]
    if len(labels) != len(models):
        raise LeafError(f"--labels gives {len(labels)} names for {len(models)} models")
    device = resolve_device(args.device)
    results = compare_models(models, items, labels, device=device, dtype=args.dtype,
                             progress=True)
    out = {"spans": args.spans, "data": str(args.data), "verified_only": args.verified_only,
           "models": [r.to_json() for r in results]}
    write_json_atomic(args.out, finite_json(out))
    print(format_table(results))
    print(f"wrote {args.out}")
    return 0

