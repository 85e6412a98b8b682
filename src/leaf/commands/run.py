"""``leaf run CONFIG.yaml``: the whole pipeline in one resumable run directory."""

from __future__ import annotations

from pathlib import Path

from leaf.commands._options import live_terminal
from leaf.errors import LeafError
from leaf.settings import describe

NAME = "run"
HELP = "run the whole pipeline (data, screen, detect, prune, distill, eval) from one config"
DESCRIPTION = """\
Run every LeaF stage from one YAML config in a run directory:
  data (testbed splits or your files) -> screen -> detect (instruction, response level)
  -> prune (+ verification) -> distill (each variant x seed) -> eval (every model x test split)
On a terminal, shows one progress line that rewrites itself (stage i/N, time taken, an estimate
of what is left); to a pipe or a log file, and always in RUN_DIR/stages.log, prints one line per
stage as it starts and one as it ends. Each stage's own output goes to RUN_DIR/stages.log unless
--verbose (which prints everything, a line per stage included).
Writes RUN_DIR/manifest.json (per stage: inputs, outputs, config hash, status, timings),
RUN_DIR/results.json and the stage outputs (data/, screen/, detect/, prune/, train/,
distill/, eval/, detection/; see docs/pipeline.md). Run the same command again to skip finished stages and resume an
interrupted one; a changed setting re-runs the stages it affects.

The whole config (YAML, --quick and every --set) is checked before any stage runs: an unknown
key, a value of the wrong type or out of range exits with status 2 and names the key. The keys
are listed below and documented in docs/pipeline.md; the bundled examples are in
leaf/configs/testbed/."""


def config_keys() -> str:
    """The config keys with their defaults and help, from the typed RunConfig."""
    import textwrap

    from leaf.pipeline.config import RUNTIME_KEYS, RunConfig  # heavy: numpy

    from_runtime = {f"{section}.{key}": f"(runtime.{key})" for section in
                    ("screen", "evaluate", "detect") for key in RUNTIME_KEYS}
    lines = []
    for line in describe(RunConfig, width=36, shown=from_runtime):
        lines += textwrap.wrap(line, 100, subsequent_indent=" " * 40) or [line]
    return ("config keys (KEY = default  meaning; `--set KEY=VALUE` overrides any):\n  "
            + "\n  ".join(lines))


def add_arguments(parser) -> None:
    parser.epilog = config_keys()
    parser.add_argument("config", help="run config (YAML)")
    parser.add_argument("--run-dir", default=None,
                        help="run directory (default: runs/<config name>[-quick])")
    parser.add_argument("--quick", action="store_true",
                        help="apply the config's `quick:` section (fewer samples and seeds)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, dotted, value in YAML: "
                             "--set data.bias=0.8 --set seeds=[0,1] (repeatable); a mapping "
                             "merges into the config's (--set 'distill.variants={x: [s]}' "
                             "adds variant x and keeps the others)")
    parser.add_argument("--no-tables", action="store_true", help="do not print the tables")
    parser.add_argument("--verbose", action="store_true",
                        help="show every stage's own output (default: RUN_DIR/stages.log)")


def parse_sets(items: list[str]) -> dict:
    """``["a.b=1", "c=[0, 1]"]`` -> ``{"a": {"b": 1}, "c": [0, 1]}`` (values parsed as YAML)."""
    import yaml  # heavy: yaml

    out: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise LeafError(f"--set {item!r}: expected KEY=VALUE")
        node = out
        *parents, last = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return out


def run(args) -> int:
    from leaf.pipeline import run_pipeline  # heavy: numpy
    from leaf.pipeline.config import load_config  # heavy: numpy
    from leaf.pipeline.tables import render  # heavy: numpy

    cfg = load_config(args.config, quick=args.quick, overrides=parse_sets(args.set))
    run_dir = Path(args.run_dir or Path("runs") / (cfg.name + ("-quick" if args.quick else "")))
    results = run_pipeline(cfg, run_dir, quiet=not args.verbose, live=live_terminal(args))
    if not args.no_tables:
        print(render(results))
    print(f"run directory: {run_dir}")
    return 0
