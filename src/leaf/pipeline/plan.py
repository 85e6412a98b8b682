"""The LeaF pipeline as a list of stages, built from a run config.

A run has one *replicate* per seed. With testbed data each seed draws its own splits, so
stage 1 (data, screen, detect, prune) runs once per seed in ``data<seed>/``; with data files
every seed shares one ``data/`` replicate and only distillation differs.

Run directory layout::

    manifest.json  config.json  results.json  (stages.log)
    <dkey>/data/train.jsonl, <split>.jsonl        testbed splits (or copies of the given files)
    <dkey>/screen/screened.jsonl                  leaf screen
    <dkey>/detect/<level>.jsonl                   leaf detect, one per level
    <dkey>/prune/<set>.jsonl                      leaf prune, one per counterfactual set
    <dkey>/detection/<rule>.json                  pruned spans against the planted spans
    <dkey>/pair_check.json                        teacher vs student before distillation
    <dkey>/train/<variant>.jsonl                  originals + the variant's kept counterfactuals
    distill/<variant>/seed<k>/                    leaf distill (config.yaml, model/)
    eval/<model>/<dkey>/<split>/                  leaf eval (predictions, metrics.json)
    attention.json                                students' attention on the planted spans

Every stage calls a stage function of :mod:`leaf.stages` in this process with the options the
typed config (:class:`leaf.pipeline.config.RunConfig`) built when it was loaded; a stage's
``params`` (what its hash covers and the manifest records) are those options as plain data.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leaf import stages as S
from leaf.data.jsonl import finite_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from leaf.data.readers import is_table, with_columns
from leaf.data.schema import read_samples
from leaf.errors import LeafError
from leaf.pipeline.config import (
    SPLIT_LABELS,
    RunConfig,
    distill_config,
    group_of,
    variant_arguments,
)
from leaf.pipeline.launch import stage_call
from leaf.pipeline.pair_check import check_replicate, pair_lines, pair_warning
from leaf.pipeline.runner import Stage
from leaf.settings import to_mapping
from leaf.terminal import say

if TYPE_CHECKING:
    from leaf.distill.config import DistillArguments


def build_stages(cfg: RunConfig, run_dir: str | Path) -> list[Stage]:
    """All stages of one run, in the order they must run."""
    run = Path(run_dir)
    stages: list[Stage] = []
    splits = cfg.test_splits()
    reps = cfg.replicates()
    data_seeds: dict[str, int] = {}
    for seed, dkey in reps.items():
        data_seeds.setdefault(dkey, seed)  # the first seed of each data key
    tests: dict[str, dict[str, Path]] = {}
    sets: dict[str, dict[str, Path]] = {}
    for dkey, seed in data_seeds.items():
        tests[dkey], sets[dkey] = _stage1(cfg, run / dkey, dkey, seed, splits, stages)

    for message in plan_warnings(cfg):
        warn(message)
    models: dict[str, Path | str] = {"teacher": cfg.teacher, "student": cfg.student}
    options = S.EvalOptions(generation=cfg.evaluate)

    def evaluate(key: str, dkey: str) -> None:
        for split in splits:
            out = run / "eval" / key / dkey / split
            model, bench = models[key], tests[dkey][split]
            stages.append(Stage(
                f"eval_{key}_{dkey}_{split}",
                stage_call(cfg.parallel, "eval", S.evaluate, model, bench, out, options,
                           threads=cfg.runtime.threads),
                {"dir": out, "metrics": out / "metrics.json"}, {"model": model, "bench": bench},
                {"evaluate": to_mapping(options)}))

    # the teacher and the student first: the pair check reads them before any distillation
    fixed = [(k, d) for k, d in cfg.model_keys() if k in ("teacher", "student")]
    for key, dkey in fixed:
        evaluate(key, dkey)
    for dkey in data_seeds:
        stages.append(_pair_check_stage(run, dkey, splits))
    for seed, dkey in reps.items():
        for variant in cfg.distill.variants:
            models[f"{variant}-s{seed}"] = _stage2(cfg, run, dkey, seed, variant, sets[dkey],
                                                   stages)
    for key, dkey in cfg.model_keys():
        if (key, dkey) not in fixed:
            evaluate(key, dkey)

    att_out = _attention_stage(cfg, run, models, tests, splits, stages)

    from leaf.pipeline.results import collect_results  # heavy: numpy

    inputs = {f"eval:{k}/{d}/{s}": run / "eval" / k / d / s / "metrics.json"
              for k, d in cfg.model_keys() for s in splits}
    for dkey in data_seeds:
        inputs.update({f"set:{dkey}/{n}": p for n, p in sets[dkey].items()})
        inputs.update({f"detection:{dkey}/{r}": run / dkey / "detection" / f"{r}.json"
                       for r in cfg.detection.rules})
    inputs.update({f"pair_check:{d}": run / d / "pair_check.json" for d in data_seeds})
    if att_out:
        inputs["attention"] = att_out
    stages.append(Stage("results", lambda: collect_results(cfg, run),
                        {"results": run / "results.json"}, inputs,
                        {"splits": splits, "models": cfg.model_keys(),
                         "lambdas": {v: cfg.lambda_of(v) for v in cfg.distill.variants}}))
    return stages


def _pair_check_stage(run: Path, dkey: str, splits: list[str]) -> Stage:
    """Teacher against student on the screened data and the test splits, before distillation
    (:mod:`leaf.pipeline.pair_check`): one line of numbers, a warning when the teacher is
    not better, and ``<dkey>/pair_check.json``."""
    out = run / dkey / "pair_check.json"
    inputs: dict[str, Path | str] = {"screened": run / dkey / "screen" / "screened.jsonl"}
    inputs.update({f"eval:{role}/{split}": run / "eval" / role / dkey / split / "metrics.json"
                   for role in ("teacher", "student") for split in splits})

    def check() -> None:
        result = check_replicate(dkey, run / dkey, run / "eval", splits)
        write_json_atomic(out, finite_json(result))
        for line in pair_lines(result, SPLIT_LABELS):
            note(line)
        message = pair_warning(result, SPLIT_LABELS)
        if message:
            warn(message)

    return Stage(f"pair_check_{dkey}", check, {"pair_check": out}, inputs, {"splits": splits})


def _attention_stage(cfg: RunConfig, run: Path, models: dict[str, Path | str],
                     tests: dict[str, dict[str, Path]], splits: list[str],
                     stages: list[Stage]) -> Path | None:
    """Attention of every student on the planted distractor (``RUN_DIR/attention.json``,
    :mod:`leaf.pipeline.attention_stage`): on by default with testbed data; with data files
    only when ``attention.enabled`` is set true (their rows must then carry ``planted`` spans)."""
    att = cfg.attention
    enabled = att.enabled
    if enabled is None:  # auto: testbed data carries planted spans, data files may not
        enabled = bool(cfg.data.testbed)
    if not enabled or att.split not in splits:
        return None
    from leaf.pipeline.attention_stage import measure_run  # heavy: numpy

    seed_of = {f"{v}-s{s}": s for v in cfg.distill.variants for s in cfg.seeds}
    entries = [{"key": group_of(key), "member": f"{key}@{dkey}", "seed": seed_of.get(key),
                "model": models[key], "data": tests[dkey][att.split]}
               for key, dkey in cfg.model_keys() if key != "teacher"]
    out = run / "attention.json"
    inputs: dict[str, Path | str] = {f"model:{e['member']}": e["model"] for e in entries}
    inputs.update({f"data:{e['member']}": e["data"] for e in entries})
    stages.append(Stage(
        "attention",
        lambda: measure_run(entries, out, split=att.split, part=att.part, limit=att.limit,
                            device=cfg.runtime.device, dtype=cfg.runtime.dtype,
                            reliance=att.reliance, batch_size=cfg.evaluate.batch_size,
                            max_new_tokens=cfg.evaluate.max_new_tokens),
        {"attention": out}, inputs,
        {"split": att.split, "part": att.part, "limit": att.limit,
         "models": [[e["key"], e["member"]] for e in entries], "reliance": att.reliance}))
    return out


def _stage1(cfg: RunConfig, root: Path, dkey: str, seed: int, splits: list[str],
            stages: list[Stage]) -> tuple[dict[str, Path], dict[str, Path]]:
    """Data, screen, detect, prune and detection metrics for one data replicate."""
    teacher, student = cfg.teacher, cfg.student
    data_out = {"train": root / "data" / "train.jsonl"}
    data_out.update({s: root / "data" / f"{s}.jsonl" for s in splits})
    stages.append(_data_stage(cfg, data_out, dkey, cfg.data.seed + seed))
    train = data_out["train"]

    screened = root / "screen" / "screened.jsonl"
    stages.append(Stage(f"screen_{dkey}",
                        stage_call(cfg.parallel, "screen", S.screen, teacher, student, train,
                                   screened, cfg.screen, threads=cfg.runtime.threads),
                        {"screened": screened},
                        {"teacher": teacher, "student": student, "data": train},
                        {"screen": to_mapping(cfg.screen)}))

    scores: dict[str, Path] = {}
    for level in cfg.detect.levels:
        out = root / "detect" / f"{level}.jsonl"
        options = cfg.detect_options(level)
        scores[level] = out
        stages.append(Stage(f"detect_{dkey}_{level}",
                            stage_call(cfg.parallel, "detect", S.detect, teacher, student,
                                       screened, out, options, threads=cfg.runtime.threads),
                            {"scores": out},
                            {"teacher": teacher, "student": student, "data": screened},
                            {"detect": to_mapping(options)}))

    sets: dict[str, Path] = {}
    for name, spec in cfg.counterfactuals.items():
        out = root / "prune" / f"{name}.jsonl"
        options = cfg.prune_options(name, seed)
        verify = cfg.verify_options() if spec.verify else None
        every_row = spec.rows == "all"  # the all-row oracle: planted removal, no scores
        set_scores = None if every_row else scores[spec.level]
        inputs: dict[str, Path | str] = {"data": train}
        if set_scores is not None:
            inputs["scores"] = set_scores
        params: dict[str, Any] = {"prune": to_mapping(options)}
        if every_row:  # absent otherwise, so earlier runs' stages keep their hashes
            params["rows"] = "all"
        if verify:
            inputs.update(teacher=teacher, student=student)
            params["verify"] = to_mapping(verify)
        sets[name] = out
        stages.append(Stage(
            f"prune_{dkey}_{name}",
            stage_call(cfg.parallel, "prune" if verify else "", S.prune, train,
                       set_scores, out, options, verify=verify, threads=cfg.runtime.threads),
            {"counterfactuals": out}, inputs, params))

    for rule, set_name in cfg.detection.rules.items():
        out = root / "detection" / f"{rule}.json"
        sc_path = scores[cfg.counterfactuals[set_name].level]
        stages.append(Stage(f"detection_{dkey}_{rule}",
                            lambda s=sets[set_name], c=sc_path, o=out: detection_metrics(s, c, o),
                            {"metrics": out},
                            {"counterfactuals": sets[set_name], "scores": sc_path},
                            {"rule": rule, "set": set_name}))
    return data_out, sets


def _stage2(cfg: RunConfig, run: Path, dkey: str, seed: int, variant: str,
            sets: dict[str, Path], stages: list[Stage]) -> Path:
    """The training file and the distillation of one variant for one seed."""
    train = run / dkey / "data" / "train.jsonl"
    train_file = run / dkey / "train" / f"{variant}.jsonl"
    spec = cfg.distill.variants[variant]
    src = {n: sets[n] for n in spec.sets}
    extra = sets[spec.extra_originals] if spec.extra_originals else None
    inputs: dict[str, Path | str] = {"data": train, **src}
    if extra:
        inputs["extra_originals"] = extra
    name = f"trainset_{dkey}_{variant}"
    params: dict[str, Any] = {"sets": sorted(src), "extra_originals": spec.extra_originals}
    draw_seed = None
    if spec.extra_draw != "hard":  # absent for hard copies, so earlier runs keep their hashes
        draw_seed = cfg.data.seed + seed
        params.update(extra_draw=spec.extra_draw, seed=draw_seed)
    if not any(st.name == name for st in stages):
        stages.append(Stage(name, lambda t=train, s=src, o=train_file, x=extra:
                            build_train_file(t, s, o, x, spec.extra_draw, draw_seed or 0),
                            {"train": train_file}, inputs, params))
    out_dir = run / "distill" / variant / f"seed{seed}"
    dconf = distill_config(cfg, variant, seed, out_dir / "model", train_file)
    has_sets = bool(spec.sets or spec.extra_originals)

    def train_variant(c: dict = dconf, d: Path = out_dir) -> None:
        if has_sets:
            warn_if_no_counterfactuals(variant, seed, train_file)
        run_distill(c, variant_arguments(cfg, variant, seed, out_dir / "model", train_file), d)

    stages.append(Stage(f"distill_{variant}-s{seed}", train_variant,
                        {"model": out_dir / "model"},
                        {"teacher": cfg.teacher, "student": cfg.student, "train": train_file},
                        {"config": dconf}))
    return out_dir / "model"


def _data_stage(cfg: RunConfig, outs: dict[str, Path], dkey: str, data_seed: int) -> Stage:
    data = cfg.data
    if data.testbed:
        params = {"testbed": data.testbed, "seed": data_seed, "bias": data.bias,
                  "sizes": data.sizes}
        if data.clean_frac:  # absent when 0, so earlier runs' stages keep their hashes
            params["clean_frac"] = data.clean_frac

        def make() -> None:
            from leaf.testbed.tasks import write_splits  # heavy: numpy

            write_splits(outs["train"].parent, data.testbed, seed=data_seed, bias=data.bias,
                         sizes=data.sizes, clean_frac=data.clean_frac)

        return Stage(f"data_{dkey}", make, outs, {}, params)

    src = {"train": data.train, **data.tests}

    def copy() -> None:

        for k, path in src.items():
            source = with_columns(path, data.columns)
            rows = read_samples(source, need_response=(k == "train"), need_grading=True)
            outs[k].parent.mkdir(parents=True, exist_ok=True)
            if is_table(source):  # another format or a column mapping: leaf's JSONL
                write_jsonl_atomic(outs[k], rows)
                continue
            shutil.copyfile(path, outs[k].with_name(outs[k].name + ".tmp"))
            outs[k].with_name(outs[k].name + ".tmp").replace(outs[k])

    params: dict[str, Any] = {"files": sorted(src)}
    if data.columns:  # absent when unset, so earlier runs' stages keep their hashes
        params["columns"] = data.columns
    return Stage(f"data_{dkey}", copy, outs, dict(src), params)


def note(message: str) -> None:
    """One ``leaf run:`` line of information on stdout, also on the terminal when a quiet run
    sends the stages' output to ``stages.log``."""
    say(f"leaf run: {message}")


def warn(message: str) -> None:
    """One ``leaf run: warning:`` line on stderr, also on the terminal when a quiet run sends
    the stages' output to ``stages.log``."""
    say(f"leaf run: warning: {message}", error=True)


def plan_warnings(cfg: RunConfig) -> list[str]:
    """What the config alone says about variants that would train on no counterfactuals: a
    variant with sets whose lambda is 1.0 gives the counterfactual term no weight."""
    out = []
    for name, spec in cfg.distill.variants.items():
        if spec.sets and cfg.lambda_of(name) >= 1.0 and cfg.mixing_of(name) == "paired":
            out.append(f"variant {name!r} has counterfactual sets but hybrid_lambda 1.0: the "
                       "counterfactual term has no weight, so it trains as plain KD")
    return out


_NO_COUNTERFACTUALS = (
    "variant {variant!r} (seed {seed}) trains on no counterfactuals: its sets kept none "
    "({train}), so it repeats plain KD. LeaF needs samples the teacher answers right and the "
    "student wrong, and counterfactuals both then answer right: check the screening and "
    "verification counts (docs/pruning.md, 'When LeaF has nothing to work with')")


def warn_if_no_counterfactuals(variant: str, seed: int, train_file: Path) -> bool:
    """Warn (and return True) when ``train_file`` holds no counterfactual row."""
    if any(r.get("kind") == "counterfactual" for r in read_jsonl(train_file)):
        return False
    warn(_NO_COUNTERFACTUALS.format(variant=variant, seed=seed, train=train_file))
    return True


def build_train_file(train: Path, sets: dict[str, Path], out: Path,
                     extra_originals: Path | None = None, extra_draw: str = "hard",
                     seed: int = 0) -> None:
    """Originals of every training sample plus the sets' kept counterfactuals, atomically.

    A counterfactual is kept when it was verified (``verified`` true) or not checked (null);
    rows that failed verification are dropped. Originals come from ``train`` so that a variant
    with no counterfactual sets (plain KD) trains on exactly the same originals.

    ``extra_originals`` (a counterfactual set's file) adds an "extra KD rows" control: as many
    unpruned copies of originals as that set keeps counterfactuals (``id`` ``<origin>#x<j>``,
    ``masking: "none"``, ``pruned: []``). ``extra_draw`` says which originals: ``hard``, the
    original of each kept counterfactual (student-wrong rows, so the copies upweight the
    distribution the screening selected, nearly all with a misleading distractor); ``random``,
    drawn uniformly with replacement from all training originals (``random.Random(seed)``).
    The copies are counterfactual-kind rows, so they take the counterfactual rows' place in
    batching and in the loss: the hard control differs from LeaF only in that no token was
    removed, and the random one also in which rows are repeated.
    """
    originals = {s["id"]: {**s, "origin_id": s["id"], "kind": "original",
                           "level": "instruction", "pruned": [], "verified": None}
                 for s in read_jsonl(train)}
    rows = list(originals.values())
    seen: set[str] = set()
    for name, path in sets.items():
        for r in _kept(path):
            if r["id"] in seen:
                raise LeafError(f"{path}: counterfactual id {r['id']!r} also appears in another "
                                f"set of this variant ({name})")
            seen.add(r["id"])
            rows.append(r)
    if extra_originals is not None:
        copies: dict[str, int] = {}
        chosen = [r["origin_id"] for r in _kept(extra_originals)]
        if extra_draw == "random":
            pool = sorted(originals)
            rng = random.Random(seed)
            chosen = [pool[rng.randrange(len(pool))] for _ in chosen]
        elif extra_draw != "hard":
            raise LeafError(f"extra_draw must be 'hard' or 'random', got {extra_draw!r}")
        for origin in chosen:
            j = copies[origin] = copies.get(origin, -1) + 1
            rows.append({**originals[origin], "id": f"{origin}#x{j}",
                         "kind": "counterfactual", "masking": "none", "strategy": None})
    write_jsonl_atomic(out, rows)


def _kept(path: Path) -> list[dict]:
    """The counterfactual rows of a set that training keeps (verified, or not checked)."""
    return [r for r in read_jsonl(path)
            if r.get("kind") == "counterfactual" and r.get("verified") is not False]


def run_distill(dconf: dict, args: DistillArguments, out_dir: Path) -> None:
    """Write the variant's distill config for the record (``leaf distill config.yaml`` repeats
    the training; the run never reads it back) and train with ``args``, the same settings
    typed (resumes from the last checkpoint in the output directory)."""
    import yaml  # heavy: yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "config.yaml"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(dconf, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    S.distill(args)


def detection_metrics(counterfactuals: Path, scores: Path, out: Path) -> None:
    """Score a set's pruned instruction spans against each sample's planted spans.

    Only samples that ``leaf detect`` scored count (a scored sample with nothing pruned is a
    miss); samples never scored (the student was right) are left out.
    """
    from leaf.testbed.metrics import detection_quality, flagged_from_counterfactuals  # heavy: numpy

    scored = {r["id"] for r in read_jsonl(scores) if r.get("level") == "instruction"}
    rows = read_jsonl(counterfactuals)
    flagged = {k: v for k, v in flagged_from_counterfactuals(rows).items() if k in scored}
    samples = [r for r in rows if r.get("kind") == "original"]
    missing = [r["id"] for r in samples if r["id"] in flagged and "planted" not in r]
    if missing:
        raise LeafError(f"{counterfactuals}: sample {missing[0]!r} has no `planted` spans; "
                        "detection metrics need testbed data (drop `detection:` otherwise)")
    write_json_atomic(out, detection_quality(samples, flagged))
