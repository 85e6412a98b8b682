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
    <dkey>/train/<variant>.jsonl                  originals + the variant's kept counterfactuals
    distill/<variant>/seed<k>/                    leaf distill (config.yaml, model/)
    eval/<model>/<dkey>/<split>/                  leaf eval (predictions, metrics.json)
    attention.json                                students' attention on the planted spans

Stage commands run in this process through :func:`leaf.cli.main`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from leaf.data.jsonl import read_jsonl, write_json_atomic, write_jsonl_atomic
from leaf.errors import LeafError
from leaf.pipeline.runner import Stage


def call_leaf(argv: list[str]) -> None:
    """Run one ``leaf`` subcommand in this process; raise if it fails."""
    from leaf.cli import main

    rc = main([str(a) for a in argv])
    if rc != 0:
        raise LeafError(f"`leaf {' '.join(str(a) for a in argv)}` exited with status {rc}")


def _opt(flag: str, value: Any) -> list[str]:
    return [] if value is None else [flag, str(value)]


def replicates(cfg: dict) -> dict[int, str]:
    """Seed -> data key. Testbed data is drawn anew for every seed (``data<k>``: splits with
    seed ``data.seed + k``); data given as files is shared by all seeds (``data``)."""
    seeds = cfg["seeds"]
    if cfg["data"].get("testbed"):
        return {s: f"data{s}" for s in seeds}
    return {s: "data" for s in seeds}


def model_keys(cfg: dict) -> list[tuple[str, str]]:
    """``(model, data key)`` for every evaluation: teacher and student (pre-KD) on every data
    replicate, then each distilled ``variant-s<seed>`` on its own seed's replicate."""
    reps = replicates(cfg)
    keys = [(m, d) for d in dict.fromkeys(reps.values()) for m in ("teacher", "student")]
    for variant in cfg["distill"]["variants"]:
        keys += [(f"{variant}-s{seed}", reps[seed]) for seed in cfg["seeds"]]
    return keys


def test_splits(cfg: dict) -> list[str]:
    data = cfg["data"]
    if data.get("testbed"):
        sizes = data.get("sizes") or {}
        from leaf.testbed.tasks import DEFAULT_SIZES

        merged = {**DEFAULT_SIZES, **sizes}
        return [s for s in merged if s != "train" and merged[s]]
    return list(data["tests"])


def build_stages(cfg: dict, run_dir: str | Path) -> list[Stage]:
    """All stages of one run, in the order they must run."""
    run = Path(run_dir)
    stages: list[Stage] = []
    splits = test_splits(cfg)
    reps = replicates(cfg)
    data_seeds: dict[str, int] = {}
    for seed, dkey in reps.items():
        data_seeds.setdefault(dkey, seed)  # the first seed of each data key
    tests: dict[str, dict[str, Path]] = {}
    sets: dict[str, dict[str, Path]] = {}
    for dkey, seed in data_seeds.items():
        tests[dkey], sets[dkey] = _stage1(cfg, run / dkey, dkey, seed, splits, stages)

    models: dict[str, Path | str] = {"teacher": cfg["teacher"], "student": cfg["student"]}
    dcfg = cfg["distill"]
    for seed, dkey in reps.items():
        for variant, set_names in dcfg["variants"].items():
            models[f"{variant}-s{seed}"] = _stage2(cfg, run, dkey, seed, variant,
                                                   set_names or [], sets[dkey], stages)

    ev = cfg["evaluate"]
    common = ["--device", cfg["device"], "--dtype", cfg["dtype"]]
    for key, dkey in model_keys(cfg):
        for split in splits:
            out = run / "eval" / key / dkey / split
            argv = ["eval", "--model", models[key], "--bench", tests[dkey][split], "--out", out,
                    *_opt("--batch-size", ev.get("batch_size")),
                    *_opt("--max-new-tokens", ev.get("max_new_tokens")), *common]
            stages.append(Stage(f"eval_{key}_{dkey}_{split}", lambda a=argv: call_leaf(a),
                                {"dir": out, "metrics": out / "metrics.json"},
                                {"model": models[key], "bench": tests[dkey][split]},
                                {"argv": argv}))

    att_out = _attention_stage(cfg, run, models, tests, splits, stages)

    from leaf.pipeline.results import collect_results

    inputs = {f"eval:{k}/{d}/{s}": run / "eval" / k / d / s / "metrics.json"
              for k, d in model_keys(cfg) for s in splits}
    for dkey in data_seeds:
        inputs.update({f"set:{dkey}/{n}": p for n, p in sets[dkey].items()})
        inputs.update({f"detection:{dkey}/{r}": run / dkey / "detection" / f"{r}.json"
                       for r in cfg["detection"]["rules"]})
    if att_out:
        inputs["attention"] = att_out
    stages.append(Stage("results", lambda: collect_results(cfg, run),
                        {"results": run / "results.json"}, inputs,
                        {"splits": splits, "models": model_keys(cfg)}))
    return stages


def _attention_stage(cfg: dict, run: Path, models: dict[str, Path | str],
                     tests: dict[str, dict[str, Path]], splits: list[str],
                     stages: list[Stage]) -> Path | None:
    """Attention of every student on the planted distractor (``RUN_DIR/attention.json``,
    :mod:`leaf.pipeline.attention_stage`): on by default with testbed data; with data files only
    when ``attention.enabled`` is set true (their rows must then carry ``planted`` spans)."""
    att = cfg.get("attention") or {}
    split = att.get("split", "test_anti")
    enabled = att.get("enabled")
    if enabled is None:  # auto: testbed data carries planted spans, data files may not
        enabled = bool(cfg["data"].get("testbed"))
    if not enabled or split not in splits:
        return None
    from leaf.pipeline.attention_stage import group_of, measure_run

    seed_of = {f"{v}-s{s}": s for v in cfg["distill"]["variants"] for s in cfg["seeds"]}
    entries = [{"key": group_of(key), "member": f"{key}@{dkey}", "seed": seed_of.get(key),
                "model": models[key], "data": tests[dkey][split]}
               for key, dkey in model_keys(cfg) if key != "teacher"]
    out = run / "attention.json"
    limit, part = att.get("limit", 100), att.get("part", "distractor")
    inputs: dict[str, Path | str] = {f"model:{e['member']}": e["model"] for e in entries}
    inputs.update({f"data:{e['member']}": e["data"] for e in entries})
    stages.append(Stage(
        "attention",
        lambda: measure_run(entries, out, split=split, part=part, limit=limit,
                            device=cfg["device"], dtype=cfg["dtype"]),
        {"attention": out}, inputs,
        {"split": split, "part": part, "limit": limit,
         "models": [[e["key"], e["member"]] for e in entries]}))
    return out


def _stage1(cfg: dict, root: Path, dkey: str, seed: int, splits: list[str],
            stages: list[Stage]) -> tuple[dict[str, Path], dict[str, Path]]:
    """Data, screen, detect, prune and detection metrics for one data replicate."""
    common = ["--device", cfg["device"], "--dtype", cfg["dtype"]]
    teacher, student = cfg["teacher"], cfg["student"]
    data_out = {"train": root / "data" / "train.jsonl"}
    data_out.update({s: root / "data" / f"{s}.jsonl" for s in splits})
    stages.append(_data_stage(cfg, data_out, dkey, cfg["data"]["seed"] + seed))
    train = data_out["train"]

    screened = root / "screen" / "screened.jsonl"
    sc = cfg["screen"]
    argv = ["screen", "--teacher", teacher, "--student", student, "--data", train,
            "--out", screened, *_opt("--batch-size", sc.get("batch_size")),
            *_opt("--max-new-tokens", sc.get("max_new_tokens")), *common]
    stages.append(Stage(f"screen_{dkey}", lambda a=argv: call_leaf(a), {"screened": screened},
                        {"teacher": teacher, "student": student, "data": train}, {"argv": argv}))

    det = cfg["detect"]
    scores: dict[str, Path] = {}
    for level in det["levels"]:
        out = root / "detect" / f"{level}.jsonl"
        argv = ["detect", "--teacher", teacher, "--student", student, "--data", screened,
                "--out", out, "--level", level, *_opt("--batch-size", det.get("batch_size")),
                *common]
        if level == "response":
            argv += _opt("--segments", det.get("segments"))
        if det.get("all"):
            argv.append("--all")
        scores[level] = out
        stages.append(Stage(f"detect_{dkey}_{level}", lambda a=argv: call_leaf(a),
                            {"scores": out},
                            {"teacher": teacher, "student": student, "data": screened},
                            {"argv": argv}))

    sets: dict[str, Path] = {}
    for name, spec in cfg["counterfactuals"].items():
        p = {**cfg["prune"], **spec}
        level = p.get("level", "instruction")
        out = root / "prune" / f"{name}.jsonl"
        argv = ["prune", "--data", train, "--scores", scores[level], "--out", out,
                "--threshold-mode", p["threshold_mode"], "--tau", p["tau"],
                "--quantile", p["quantile"], "--strategy", p.get("strategy", "span"),
                "--masking", p.get("masking", "gradient"), "--seed", p["seed"] + seed]
        inputs: dict[str, Path | str] = {"data": train, "scores": scores[level]}
        if p.get("verify"):
            argv += ["--verify", "--teacher", teacher, "--student", student,
                     *_opt("--max-new-tokens", cfg["screen"].get("max_new_tokens")),
                     *_opt("--batch-size", cfg["screen"].get("batch_size")), *common]
            inputs.update(teacher=teacher, student=student)
        sets[name] = out
        stages.append(Stage(f"prune_{dkey}_{name}", lambda a=argv: call_leaf(a),
                            {"counterfactuals": out}, inputs, {"argv": argv}))

    for rule, set_name in cfg["detection"]["rules"].items():
        out = root / "detection" / f"{rule}.json"
        sc_path = scores[cfg["counterfactuals"][set_name].get("level", "instruction")]
        stages.append(Stage(f"detection_{dkey}_{rule}",
                            lambda s=sets[set_name], c=sc_path, o=out: detection_metrics(s, c, o),
                            {"metrics": out},
                            {"counterfactuals": sets[set_name], "scores": sc_path},
                            {"rule": rule, "set": set_name}))
    return data_out, sets


def _stage2(cfg: dict, run: Path, dkey: str, seed: int, variant: str, set_names: list[str],
            sets: dict[str, Path], stages: list[Stage]) -> Path:
    """The training file and the distillation of one variant for one seed."""
    dcfg = cfg["distill"]
    teacher, student = cfg["teacher"], cfg["student"]
    train = run / dkey / "data" / "train.jsonl"
    train_file = run / dkey / "train" / f"{variant}.jsonl"
    src = {n: sets[n] for n in set_names}
    name = f"trainset_{dkey}_{variant}"
    if not any(st.name == name for st in stages):
        stages.append(Stage(name, lambda t=train, s=src, o=train_file: build_train_file(t, s, o),
                            {"train": train_file}, {"data": train, **src}, {"sets": sorted(src)}))
    out_dir = run / "distill" / variant / f"seed{seed}"
    dconf = {
        **dcfg.get("args", {}),
        "teacher_model": teacher, "student_model": student, "train_file": train_file,
        "hybrid_lambda": dcfg["hybrid_lambda"], "output_dir": out_dir / "model", "seed": seed,
    }
    stages.append(Stage(f"distill_{variant}-s{seed}", lambda c=dconf, d=out_dir: run_distill(c, d),
                        {"model": out_dir / "model"},
                        {"teacher": teacher, "student": student, "train": train_file},
                        {"config": dconf}))
    return out_dir / "model"


def _data_stage(cfg: dict, outs: dict[str, Path], dkey: str, data_seed: int) -> Stage:
    data = cfg["data"]
    if data.get("testbed"):
        sizes = data.get("sizes")
        params = {"testbed": data["testbed"], "seed": data_seed, "bias": data["bias"],
                  "sizes": sizes}

        def make() -> None:
            from leaf.testbed.tasks import write_splits

            write_splits(outs["train"].parent, data["testbed"], seed=data_seed,
                         bias=data["bias"], sizes=sizes)

        return Stage(f"data_{dkey}", make, outs, {}, params)

    src = {"train": data["train"], **data["tests"]}

    def copy() -> None:
        from leaf.data.schema import read_samples

        for k, path in src.items():
            read_samples(path, need_response=(k == "train"), need_grading=True)
            outs[k].parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, outs[k].with_name(outs[k].name + ".tmp"))
            outs[k].with_name(outs[k].name + ".tmp").replace(outs[k])

    return Stage(f"data_{dkey}", copy, outs, dict(src), {"files": sorted(src)})


def build_train_file(train: Path, sets: dict[str, Path], out: Path) -> None:
    """Originals of every training sample plus the sets' kept counterfactuals, atomically.

    A counterfactual is kept when it was verified (``verified`` true) or not checked (null);
    rows that failed verification are dropped. Originals come from ``train`` so that a variant
    with no counterfactual sets (plain KD) trains on exactly the same originals.
    """
    rows = [
        {**s, "origin_id": s["id"], "kind": "original", "level": "instruction", "pruned": [],
         "verified": None}
        for s in read_jsonl(train)
    ]
    seen: set[str] = set()
    for name, path in sets.items():
        for r in read_jsonl(path):
            if r.get("kind") != "counterfactual" or r.get("verified") is False:
                continue
            if r["id"] in seen:
                raise LeafError(f"{path}: counterfactual id {r['id']!r} also appears in another "
                                f"set of this variant ({name})")
            seen.add(r["id"])
            rows.append(r)
    write_jsonl_atomic(out, rows)


def run_distill(dconf: dict, out_dir: Path) -> None:
    """Write the variant's distill config and run ``leaf distill`` (resumes from checkpoints)."""
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "config.yaml"
    tmp = path.with_name(path.name + ".tmp")
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in dconf.items()}
    tmp.write_text(yaml.safe_dump(plain, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    call_leaf(["distill", "--config", path])


def detection_metrics(counterfactuals: Path, scores: Path, out: Path) -> None:
    """Score a set's pruned instruction spans against each sample's planted spans.

    Only samples that ``leaf detect`` scored count (a scored sample with nothing pruned is a
    miss); samples never scored (the student was right) are left out.
    """
    from leaf.testbed.metrics import detection_quality, flagged_from_counterfactuals

    scored = {r["id"] for r in read_jsonl(scores) if r.get("level") == "instruction"}
    rows = read_jsonl(counterfactuals)
    flagged = {k: v for k, v in flagged_from_counterfactuals(rows).items() if k in scored}
    samples = [r for r in rows if r.get("kind") == "original"]
    missing = [r["id"] for r in samples if r["id"] in flagged and "planted" not in r]
    if missing:
        raise LeafError(f"{counterfactuals}: sample {missing[0]!r} has no `planted` spans; "
                        "detection metrics need testbed data (drop `detection:` otherwise)")
    write_json_atomic(out, detection_quality(samples, flagged))
