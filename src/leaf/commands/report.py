"""``leaf report``: one self-contained HTML file to audit detection and pruning."""

from __future__ import annotations

import argparse
from pathlib import Path

from leaf.commands._options import add_option, option_help
from leaf.data.jsonl import read_jsonl
from leaf.detect.counterfactuals import PruneOptions
from leaf.errors import LeafError, LeafInputError
from leaf.report.html import write_report

NAME = "report"
HELP = "write a self-contained HTML report (heatmaps, pruned spans, filters, figures)"
DESCRIPTION = """\
Reads a run directory, or the files named by flags, and writes one HTML file (inline CSS, JS,
data and figures; works offline) plus PNG figures next to it: for --out report.html,
report_diff.png, report_spans.png and (with attention results) report_attention.png.

The page opens on the run's results when RUN_DIR holds a `leaf run` results.json (paired
LeaF - KD differences, accuracy per variant with 95% intervals, detection against planted
spans, counterfactual counts and keep rates, attention), then the figures, then the samples:
by default only the scored ones, each with its saliency heatmaps, the planted spans (testbed),
the pruned spans and both models' answers.

In RUN_DIR it uses manifest.json when present (keys: scores, counterfactuals, attention:
a path or a list; screened or data, results: one path; relative to RUN_DIR, top level or under
"files"), and otherwise looks for scores*.jsonl, counterfactuals*.jsonl, screened.jsonl (else
samples.jsonl) and attention*.json in RUN_DIR and its direct subfolders, and results.json in
RUN_DIR.

The threshold shown is taken from the flags, else from the counterfactual rows'
threshold_mode / tau / quantile (or a row's threshold, the cut-off it used), else tau = 0.10.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", help="a run directory (see above)")
    p.add_argument("--scores", nargs="*", default=None, help="scores.jsonl file(s) (leaf detect)")
    p.add_argument("--counterfactuals", nargs="*", default=None,
                   help="counterfactuals.jsonl file(s) (leaf prune)")
    p.add_argument("--data", default=None, help="samples.jsonl or screened.jsonl (sample text, "
                   "teacher_correct / student_correct)")
    p.add_argument("--attention", nargs="*", default=None, help="attention.json file(s) "
                   "(leaf attention)")
    p.add_argument("--out", default=None, help="HTML file (default RUN_DIR/report.html or "
                   "report.html)")
    for field in ("threshold_mode", "tau", "quantile"):  # the rule shown, as in `leaf prune`
        add_option(p, PruneOptions, field, default=None,
                   help=option_help(PruneOptions, field, "the rule shown, as in leaf prune: ")
                   .replace("(default ", "(default: as the counterfactual rows record, else "))
    p.add_argument("--title", default="LeaF report", help="page title (default 'LeaF report')")
    p.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")


def run(args: argparse.Namespace) -> int:
    import json

    from leaf.report.collect import RunFiles, build_report_data, find_run_files  # heavy: numpy

    files = find_run_files(args.run_dir) if args.run_dir else RunFiles()
    if args.scores is not None:
        files.scores = [Path(p) for p in args.scores]
    if args.counterfactuals is not None:
        files.counterfactuals = [Path(p) for p in args.counterfactuals]
    if args.data is not None:
        files.data = Path(args.data)
    if args.attention is not None:
        files.attention = [Path(p) for p in args.attention]
    if not files.scores and not files.counterfactuals:
        raise LeafError("give RUN_DIR, or --scores and/or --counterfactuals")

    scores = [r for p in files.scores for r in read_jsonl(p)]
    cfs = [r for p in files.counterfactuals for r in read_jsonl(p)]
    samples = read_jsonl(files.data) if files.data else []
    attention = []
    for p in files.attention:
        try:
            attention.append(json.loads(Path(p).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise LeafInputError(p, None, None, f"not a readable JSON file ({exc})") from None
    results = None
    if files.results:
        try:
            results = json.loads(files.results.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise LeafInputError(files.results, None, None,
                                 f"not a readable JSON file ({exc})") from None
    data = build_report_data(scores, cfs, samples, attention, threshold_mode=args.threshold_mode,
                             tau=args.tau, quantile=args.quantile, title=args.title,
                             results=results)
    out = Path(args.out) if args.out else (Path(args.run_dir) if args.run_dir else Path(".")) \
        / "report.html"
    written = write_report(data, out, figures=not args.no_figures)
    s = data["summary"]
    print(f"{s['samples']} samples, {s['scored_samples']} scored, {s['counterfactuals']} "
          f"counterfactuals ({s['verified']} verified, {s['rejected']} rejected)")
    for p in written:
        print(f"wrote {p}")
    return 0
