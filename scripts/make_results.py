#!/usr/bin/env python
"""Regenerate docs/RESULTS.md from finished `leaf run` directories (the study, or a demo).

    bash scripts/run_study.sh leaf-study           # the study (docs/study.md); calls this script
    python scripts/make_results.py leaf-study      # -> docs/RESULTS.md
    python scripts/make_results.py leaf-demo       # the same from a `leaf demo --out leaf-demo`

When the runs hold the study's variants, the page opens with the verdict on each hypothesis of
docs/study.md per run (leaf.testbed.study: paired differences and the rule written there).

Every number and every sentence of the "What the numbers show" lists is read from the run
directories (results.json, manifest.json): the accuracy, detection, counterfactual,
attention-on-distractor and span-vs-collective tables (leaf.pipeline.tables.render) and the
statements of leaf.pipeline.reading (attention included when the run measured it); the
caveats are fixed text about what a synthetic testbed can and cannot show. The machine section describes the computer this script runs on,
so run it where the demo ran.

docs/RESULTS.md has two parts. Part 1 (the first study) is committed text: its run folders are
not in the repository, so this script refuses to overwrite a page whose part 1 names run
directories the given folder lacks, or a page that has part 2. Part 2 (the second study,
docs/study2.md) starts at the heading `# Part 2: the second study (docs/study2.md)`:

    python scripts/make_results.py --study2 leaf-study2   # replaces only part 2 (run_study2.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))  # results_part2, beside this script

from leaf.pipeline.reading import statements  # noqa: E402
from leaf.pipeline.tables import render  # noqa: E402

CAVEATS = """\
- The testbed is synthetic and tiny: one planted confounder per sample (a number in a
  distractor sentence), and teacher and student are small models trained from scratch on CPU
  (sizes above). It can show whether the *mechanics* work (does gradient comparison find the
  planted tokens, does counterfactual distillation change what the student relies on); it says
  nothing about the size of the effect on real LLMs and real benchmarks.
- The student was made to rely on the distractor by construction, and the teacher was made
  not to. Real confounders are neither planted nor single tokens.
- Distillation here is 3 epochs over 1,000 original rows at learning rate 1e-4 (settings
  above), not the paper's 3 epochs at 1e-5 over about 30K samples.
- Intervals are 95% Student-t intervals over runs; differences between variants are paired by
  seed (the two runs of a seed share data and originals). An interval that contains 0 is "no
  difference shown", which is not evidence of no difference.
- The configs and the hypotheses (docs/study.md) were committed before the runs and not
  changed after; nothing was tuned on the test splits.
"""

def machine() -> list[str]:
    import torch
    import transformers

    from leaf.machine import cpu_name

    return [f"CPU: {cpu_name()}, {os.cpu_count()} logical cores visible",
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, {platform.system()} {platform.release()}"]


def models_section(res: dict) -> list[str]:
    """Teacher and student as shipped: architecture, pre-training, held-out accuracy."""
    family = (res.get("data") or {}).get("testbed")
    if not family:
        return [f"- teacher `{res['teacher']}`, student `{res['student']}`"]
    from leaf.testbed.assets import calibration

    try:
        cal = calibration(family)
    except Exception as exc:  # a missing calibration file is reported, not fatal
        return [f"- (no calibration.json for {family}: {exc})"]
    lines = []
    for role in ("teacher", "student"):
        c = cal.get(role, {})
        arch = c.get("arch", {})
        acc = ", ".join(f"{k} {v:.3f}" for k, v in (c.get("accuracy") or {}).items())
        lines.append(
            f"- {role}: {arch.get('layers')} layer(s), hidden {arch.get('hidden')}, "
            f"{c.get('parameters')} parameters; pre-trained {c.get('steps')} steps "
            f"(distractor {(c.get('pretraining') or {}).get('distractor')}); "
            f"held-out greedy accuracy at shipping time: {acc}")
    return lines


def settings_section(res: dict) -> list[str]:
    d = res.get("distill") or {}
    keys = ("mixing", "num_train_epochs", "max_steps", "learning_rate",
            "per_device_train_batch_size", "lr_scheduler_type", "warmup_steps")
    sets = res.get("counterfactual_sets") or {}
    prune = res.get("prune") or {}
    lines = ["- distillation: " + ", ".join(f"{k} {d[k]}" for k in keys if k in d)]
    for name, spec in sets.items():
        merged = {**prune, **{k: v for k, v in spec.items() if v is not None}}
        lines.append(f"- counterfactual set `{name}`: level {merged.get('level')}, masking "
                     f"{merged.get('masking', 'gradient')}, strategy "
                     f"{merged.get('strategy', 'span')}, threshold {merged.get('threshold_mode')} "
                     f"tau {merged.get('tau')}, verify {bool(merged.get('verify'))}")
    def variant(k: str, v: dict) -> str:
        added = v["sets"] or ([f"copies of the originals of {v['extra_originals']}"]
                              if v.get("extra_originals") else "nothing")
        how = "uniform mixing" if (v.get("args") or {}).get("mixing") == "uniform" \
            else f"lambda {v['hybrid_lambda']:g}"
        return f"{k} = originals + {added} ({how})"

    lines.append("- variants: " + "; ".join(variant(k, v)
                                             for k, v in (res.get("variants") or {}).items()))
    return lines


def _num(c: dict | None, measure: str = "") -> str:
    """A paired difference with its sign; attention shares in percentage points."""
    from leaf.pipeline.tables import format_cell

    if not c:
        return "n/a"
    if measure != "attention":
        return format_cell(c, "+")
    return format_cell({k: None if c.get(k) is None else 100 * c[k]
                        for k in ("mean", "lo", "hi")}, "+") + " pp"


def verdict_section(runs: list[tuple[str, dict]]) -> list[str]:
    """The hypotheses of docs/study.md, one column per run, and every part's numbers."""
    from leaf.testbed.study import HYPOTHESES, verdicts

    found = [(name, verdicts(res)) for name, res in runs]
    if not any(p["parts"] for _, v in found for p in v["hypotheses"].values()):
        return []
    lines = ["# Verdicts on the hypotheses of docs/study.md", "",
             "Each cell: the verdict under the rule written in docs/study.md before the runs "
             "(paired differences over seeds, 95% Student-t intervals).", "",
             "| hypothesis | " + " | ".join(n for n, _ in found) + " |",
             "|---|" + "---|" * len(found)]
    for hid, (text, _) in HYPOTHESES.items():
        lines.append(f"| {hid}: {text} | " + " | ".join(
            v["hypotheses"][hid]["verdict"]
            + (" (not measured)" if v["hypotheses"][hid]["missing_parts"] else "")
            for _, v in found) + " |")
    lines += ["", "## The comparisons behind each verdict", ""]
    for name, v in found:
        lines += [f"### {name}", "", "| comparison | measure | predicted | difference [95%] | "
                  "pairs | verdict |", "|---|---|---|---|---|---|"]
        for hid, h in v["hypotheses"].items():
            for p in h["parts"]:
                left = p["runs_without_counterfactuals"]
                lines.append(f"| {hid}: {p['a']} - {p['b']} | {p['measure']} | {p['predicted']} 0 "
                             f"| {_num(p['cell'], p['measure'])} | {p['pairs']}"
                             + (f" ({left} left out)" if left else "") + f" | {p['verdict']} |")
        for c in v["controls"]:
            lines.append(f"| {c['text']}: {c['a']} - {c['b']} | {c['measure']} | (control) | "
                         f"{_num(c['cell'], c['measure'])} | {c['pairs']} | {c['verdict']} |")
        lines.append("")
    return lines


def run_dirs(root: Path) -> list[Path]:
    """Run directories under ``root`` with a results.json, `--quick` runs left out."""
    return sorted(p.parent for p in root.glob("*/results.json")
                  if not json.loads(p.read_text()).get("quick"))


def wall_time(run: Path) -> str:
    m = json.loads((run / "manifest.json").read_text())
    stages = m["stages"].values()
    total = sum(s.get("seconds_total", s.get("seconds", 0)) or 0 for s in stages)
    commit = m["run"].get("leaf_commit")
    return (f"{total:.0f} s of stage time over {len(m['stages'])} stages"
            + (f", leaf commit {commit}" if commit else ""))


def sweep_table(root: Path) -> str:
    from leaf.pipeline.config import SPLIT_LABELS
    from leaf.pipeline.tables import format_cell

    runs = run_dirs(root)
    results = [json.loads((run / "results.json").read_text()) for run in runs]
    results.sort(key=lambda r: r["data"].get("bias") or 0)
    splits = results[0]["splits"]
    lines = ["| bias | model | " + " | ".join(SPLIT_LABELS.get(s, s) for s in splits) + " |",
             "|---|---|" + "---|" * len(splits)]
    for res in results:
        bias = res["data"].get("bias")
        for r in res["rows"]:
            lines.append(f"| {bias} | {r['label']} | "
                         + " | ".join(format_cell(r["cells"].get(s)) for s in splits) + " |")
    lines += ["", "What the sweep shows (computed as above):", ""]
    for res in results:
        bias = res["data"].get("bias")
        lines += [f"- bias {bias}: {st}" for st in statements(res)
                  if st.startswith(("LeaF (instruction) minus", "KD w/o mask minus"))]
    lines += ["", "| bias | scored samples per run | verified counterfactuals per run |",
              "|---|---|---|"]
    for res in results:
        counts = list(res["counts"].values())
        kept = "; ".join(
            f"{name} {' / '.join(str(c['sets'][name]['verified']) for c in counts)}"
            for name, spec in (res.get("counterfactual_sets") or {}).items() if spec.get("verify"))
        scored = " / ".join(str(c["scored"]) for c in counts)
        lines.append(f"| {res['data'].get('bias')} | {scored} | {kept} |")
    return "\n".join(lines)


def refuse_to_clobber(out: Path, root: Path, runs: list[Path]) -> None:
    """Stop before part 1 of an existing page is lost: a page with part 2, or one whose part 1
    was made from run directories ``root`` does not have, is not overwritten."""
    from results_part2 import MARKER, split_parts

    if not out.is_file():
        return
    part1, part2 = split_parts(out.read_text(encoding="utf-8"))
    if part2 is not None:
        raise SystemExit(f"{out}: holds part 2 ({MARKER[2:]}); regenerating part 1 would "
                         "overwrite it. Use --study2 OUT for part 2, or --out another file.")
    named = re.findall(r"^Run directory `([^`]+)`", part1, flags=re.M)
    lacking = sorted(set(named) - {run.name for run in runs})
    if lacking:
        raise SystemExit(f"{out}: part 1 was generated from run directories {root} does not "
                         f"have ({', '.join(lacking)}); refusing to replace it. Write elsewhere "
                         "with --out, or regenerate it from the folder that has them.")


def write_study2(root: Path, out: Path) -> int:
    """Replace part 2 of ``out`` (or append it) from the second study's runs under ``root``;
    part 1's bytes stay as they are."""
    from results_part2 import RUNS, part2, with_part2

    if not root.is_dir():
        raise SystemExit(f"{root}: no such directory (run scripts/run_study2.sh first)")
    if not any((root / name / "results.json").is_file() for name in RUNS) and \
            not (root / "pilot" / "decision.json").is_file():
        print(f"note: {root} has none of {', '.join(RUNS)} nor pilot/decision.json yet",
              file=sys.stderr)
    existing = out.read_text(encoding="utf-8") if out.is_file() else ""
    text = with_part2(existing, part2(root, machine()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote part 2 of {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo_dir", type=Path, nargs="?",
                    help="the --out directory of `leaf demo` (or of scripts/run_study.sh)")
    ap.add_argument("--study2", type=Path, default=None, metavar="OUT",
                    help="write part 2 (the second study, docs/study2.md) from the run folders "
                         "of scripts/run_study2.sh under OUT, keeping part 1 as it is")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "RESULTS.md")
    ap.add_argument("--sweep", type=Path, default=None,
                    help="directory of `leaf run` dirs made with --set data.bias=...")
    ap.add_argument("--command", action="append", default=[],
                    help="a command that made the run directories, as run (repeatable; "
                         "default: leaf demo --out DEMO_DIR)")
    ap.add_argument("--timing", action="append", default=[],
                    help="a measured wall time to report, e.g. 'leaf demo: 3m16s' (repeatable)")
    args = ap.parse_args()
    if args.study2 is not None:
        if args.demo_dir or args.sweep:
            raise SystemExit("--study2 OUT writes part 2 only: give no DEMO_DIR or --sweep")
        return write_study2(args.study2, args.out)
    if args.demo_dir is None:
        raise SystemExit("give DEMO_DIR (part 1) or --study2 OUT (part 2)")

    runs = [r for r in run_dirs(args.demo_dir)]
    if not runs:
        raise SystemExit(f"{args.demo_dir}: no */results.json (run `leaf demo` first)")
    refuse_to_clobber(args.out, args.demo_dir, runs)
    parts = [
        "# Results on the planted-confounder testbed",
        "",
        "Generated by `scripts/make_results.py` from finished `leaf run` directories; do not "
        "edit by hand (re-run the commands below).",
        "",
        "## Commands",
        "",
        "```",
        *(args.command or [f"leaf demo --out {args.demo_dir}"]),
        *([f"bash scripts/bias_sweep.sh {args.sweep}"] if args.sweep else []),
        f"python scripts/make_results.py {args.demo_dir}"
        + (f" --sweep {args.sweep}" if args.sweep else ""),
        "```",
        "",
        *([f"Measured wall time on the machine below: {'; '.join(args.timing)}.", ""]
          if args.timing else []),
        "## Machine",
        "",
        *[f"- {line}" for line in machine()],
        "",
    ]
    loaded = [(run, json.loads((run / "results.json").read_text())) for run in runs]
    parts += verdict_section([(res["name"], res) for _, res in loaded])
    for run, res in loaded:
        parts += [f"# {res['name']}", "",
                  f"Run directory `{run.name}`: {wall_time(run)}. Config: "
                  f"`{Path(res['config_path']).name}`; data: `{json.dumps(res['data'])}`.", "",
                  "### Models and settings", "", *models_section(res), *settings_section(res), "",
                  render(res).replace("\n## ", "\n### ").replace("## ", "### ", 1), "",
                  "### What the numbers show", "",
                  *[f"- {s}" for s in statements(res)], ""]
    if args.sweep:
        parts += ["# Distillation-data bias sweep", "",
                  "The same config run with `--set data.bias=B`: B is the share of distillation "
                  "samples whose distractor agrees with the answer (the in-distribution test split "
                  "follows B too; the anti-correlated and clean splits do not change).", "",
                  sweep_table(args.sweep), ""]
    parts += ["# What these numbers do not show", "", CAVEATS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
