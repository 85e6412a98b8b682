"""``leaf demo``: the whole method on the planted-confounder testbed, with its tables."""

from __future__ import annotations

from pathlib import Path

from leaf.commands._options import live_terminal
from leaf.errors import LeafError

NAME = "demo"
HELP = "run LeaF end to end on the planted-confounder testbed and print the result tables"
DESCRIPTION = """\
Runs `leaf run` on the testbed configs bundled with leaf (leaf/configs/testbed/*.yaml; by
default those marked `demo: true`: word_problem_shift, a small version of the second testbed
study's distractor-shift regime; --family digit_sum runs the previous default): generate the
splits, screen, detect (instruction and response level), prune with verification, distil KD
w/o mask, the LeaF variants and their controls for each seed, evaluate every model on the
in-distribution, anti-correlated, clean and (word_problem_shift) shifted test splits.
Prints first what the testbed studies have shown (docs/RESULTS.md), then accuracy (mean and
95% interval), detection against the planted spans (gradient, PPL
and random rules), counterfactual counts and, where the config has a collective set
(digit_sum), span vs collective pruning.

Writes OUT/<config>[-quick]/ (a `leaf run` directory: manifest.json, results.json, ...) and
OUT/tables.md. Run it again to reuse finished stages. --quick: one seed and fewer samples
(a smoke test: 79 s measured on 2 CPU cores shared with other jobs; the full demo 6 min 56 s
on 2 idle CPU cores, 21 min 32 s at a load average of 4-5). `leaf report OUT/<config>` then
shows the run's results and samples in a browser."""


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="one seed, fewer samples (each config's `quick:` section)")
    parser.add_argument("--out", default="leaf-demo", help="output directory (default leaf-demo)")
    parser.add_argument("--family", action="append", default=None, metavar="NAME",
                        help="run this bundled config (repeatable; default: those marked "
                             "`demo: true`); --family all runs every bundled config")
    parser.add_argument("--verbose", action="store_true",
                        help="show every stage's own output (default: RUN_DIR/stages.log)")


def demo_configs(families: list[str] | None = None) -> list[Path]:
    """The bundled testbed configs: those marked ``demo: true``, or the named ones."""
    import yaml  # heavy: yaml

    from leaf.pipeline.config import PACKAGE_DIR  # heavy: numpy

    found = {p.stem: p for p in sorted((PACKAGE_DIR / "configs" / "testbed").glob("*.yaml"))}
    if not found:
        raise LeafError(f"no bundled testbed configs under {PACKAGE_DIR / 'configs' / 'testbed'}")
    if families == ["all"]:
        return list(found.values())
    if not families:
        return [p for p in found.values()
                if (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("demo")]
    unknown = [f for f in families if f not in found]
    if unknown:
        raise LeafError(f"unknown demo config(s) {unknown}; bundled: {sorted(found)}")
    return [found[f] for f in families]


def run(args) -> int:
    import time

    from leaf.pipeline import run_pipeline  # heavy: numpy
    from leaf.pipeline.config import load_config  # heavy: numpy
    from leaf.pipeline.tables import render  # heavy: numpy
    from leaf.testbed.findings import findings_text

    t0 = time.monotonic()
    print(findings_text(), flush=True)
    out = Path(args.out)
    texts = []
    for path in demo_configs(args.family):
        cfg = load_config(path, quick=args.quick)
        run_dir = out / (cfg.name + ("-quick" if args.quick else ""))
        print(f"== leaf run {path.name}{' --quick' if args.quick else ''} -> {run_dir}", flush=True)
        results = run_pipeline(cfg, run_dir, quiet=not args.verbose, live=live_terminal(args))
        texts.append(render(results))
    text = "\n".join(texts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text(findings_text() + "\n" + text, encoding="utf-8")
    print()
    print(text)
    print(f"demo finished in {time.monotonic() - t0:.0f} s; run directories and tables.md in {out}")
    return 0
