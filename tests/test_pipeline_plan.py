"""The LeaF plan wired with fake stage commands: argv, train files, results, re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import leaf.pipeline.plan as plan
import leaf.stages as leaf_stages
from leaf.data.jsonl import read_jsonl, write_json_atomic, write_jsonl_atomic
from leaf.errors import LeafError
from leaf.pipeline import run_pipeline
from leaf.pipeline.config import load_config
from leaf.pipeline.tables import render


def _sample(i: int, split: str) -> dict:
    return {"id": f"{split}-{i}", "task": "math", "instruction": f"a = {i} ; rumor : 9 ; query a ?",
            "response": f"{i}. The answer is {i}.", "answer": str(i),
            "planted": {"misleading": [[17, 18]], "distractor": [[9, 20]]}}


class FakeStages:
    """Stands in for the `leaf.stages` functions: writes each stage's outputs in the agreed
    formats and records ``(stage, arguments)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def screen(self, teacher, student, data, out, options=None):
        self.calls.append(("screen", {"data": data, "out": out, "options": options}))
        rows = [{**r, "teacher_correct": True, "student_correct": k % 2 == 0}
                for k, r in enumerate(read_jsonl(data))]
        write_jsonl_atomic(out, rows)

    def detect(self, teacher, student, data, out, options=None):
        self.calls.append(("detect", {"data": data, "out": out, "options": options}))
        rows = [{"id": r["id"], "level": options.level, "units": [[0, 1]], "diff": [0.0]}
                for r in read_jsonl(data) if not r["student_correct"]]
        write_jsonl_atomic(out, rows)

    def prune(self, data, scores, out, options=None, verify=None):
        self.calls.append(("prune", {"out": out, "options": options, "verify": verify}))
        scored = {r["id"]: r["level"] for r in read_jsonl(scores)} if scores is not None else \
            {r["id"]: "instruction" for r in read_jsonl(data)}  # planted masking: every row
        rows = []
        for k, s in enumerate(read_jsonl(data)):
            rows.append({**s, "origin_id": s["id"], "kind": "original", "pruned": [],
                         "level": "instruction", "verified": None})
            if s["id"] in scored:
                level = scored[s["id"]]
                tag = "i" if level == "instruction" else "r1."
                rows.append({**s, "id": f"{s['id']}#{tag}0", "origin_id": s["id"],
                             "kind": "counterfactual", "level": level, "pruned": [[17, 18]],
                             "masking": options.masking, "strategy": options.strategy,
                             "verified": (k % 3 != 0) if verify else None})
        write_jsonl_atomic(out, rows)

    def distill(self, args):
        self.calls.append(("distill", {"args": args}))
        n = len(read_jsonl(args.train_file))
        write_json_atomic(Path(args.output_dir) / "config.json",
                          {"n": n, "seed": args.seed, "lr": args.learning_rate})

    def evaluate(self, model, bench, out_dir, options=None):
        self.calls.append(("eval", {"model": model, "out": out_dir, "options": options}))
        n = len(read_jsonl(bench))
        acc = {"teacher": 1.0, "student": 0.5}.get(Path(model).name)
        if acc is None:  # seed-dependent, plus a little per training row
            trained = json.loads((Path(model) / "config.json").read_text())
            acc = round(0.6 + 0.1 * trained["seed"] + 0.001 * trained["n"], 6)
        write_json_atomic(Path(out_dir) / "metrics.json", {"task": "math", "n": n,
                                                           "accuracy": acc})


@pytest.fixture
def fake(monkeypatch):
    f = FakeStages()
    for name in ("screen", "detect", "prune", "distill", "evaluate"):
        monkeypatch.setattr(leaf_stages, name, getattr(f, name))
    monkeypatch.setattr(plan, "detection_metrics", lambda cf, sc, out: write_json_atomic(
        out, {"span_recall": 1.0, "token_precision": 0.5, "n_samples": 3}))
    return f


@pytest.fixture
def config(tmp_path) -> Path:
    files = {}
    for split, n in (("train", 6), ("test_id", 4), ("test_anti", 4), ("test_clean", 4)):
        files[split] = write_jsonl_path(tmp_path / f"{split}.jsonl",
                                        [_sample(i, split) for i in range(n)])
    for role in ("teacher", "student"):
        (tmp_path / role).mkdir()
        (tmp_path / role / "config.json").write_text("{}")
    cfg = {
        "name": "fake",
        "data": {"train": "train.jsonl",
                 "tests": {s: f"{s}.jsonl" for s in ("test_id", "test_anti", "test_clean")}},
        "teacher": "teacher", "student": "student",
        "counterfactuals": {
            "instruction_span": {"level": "instruction", "verify": True},
            "response_span": {"level": "response", "verify": True},
            "instruction_random": {"level": "instruction", "masking": "random"},
        },
        "seeds": [0, 1],
        "distill": {"args": {"learning_rate": 0.001, "max_steps": 3},
                    "variants": {"kd": [], "leaf_instr": ["instruction_span"],
                                 "leaf_instr_resp": ["instruction_span", "response_span"]}},
        "detection": {"rules": {"gradient": "instruction_span", "random": "instruction_random"}},
        "quick": {"seeds": [0]},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_jsonl_path(path: Path, rows: list[dict]) -> Path:
    write_jsonl_atomic(path, rows)
    return path


def test_plan_runs_every_stage_and_collects_results(fake, config, tmp_path):
    run = tmp_path / "run"
    results = run_pipeline(load_config(config), run, log=lambda s: None)
    cmds = [c[0] for c in fake.calls]
    assert cmds[:3] == ["screen", "detect", "detect"]
    assert cmds.count("prune") == 3 and cmds.count("distill") == 6
    assert cmds.count("eval") == (2 + 6) * 3
    # verification only where the set asks for it, with both models
    verify = {Path(c["out"]).stem: c["verify"] for name, c in fake.calls if name == "prune"}
    assert verify["instruction_random"] is None
    assert verify["instruction_span"].teacher.endswith("teacher")
    assert verify["response_span"].student.endswith("student")
    # the stages run with the options the config named
    assert [c["options"].level for name, c in fake.calls if name == "detect"] == \
        ["instruction", "response"]
    # train files: plain KD has only originals; LeaF adds the verified counterfactuals
    kd = read_jsonl(run / "data" / "train" / "kd.jsonl")
    assert len(kd) == 6 and {r["kind"] for r in kd} == {"original"}
    instr = read_jsonl(run / "data" / "train" / "leaf_instr.jsonl")
    both = read_jsonl(run / "data" / "train" / "leaf_instr_resp.jsonl")
    cf_instr = [r for r in instr if r["kind"] == "counterfactual"]
    assert cf_instr and all(r["verified"] is True for r in cf_instr)
    assert {r["level"] for r in both if r["kind"] == "counterfactual"} == {"instruction", "response"}
    dconf = yaml.safe_load((run / "distill" / "kd" / "seed1" / "config.yaml").read_text())
    assert dconf["seed"] == 1 and dconf["learning_rate"] == 0.001 and dconf["max_steps"] == 3
    assert dconf["train_file"].endswith("train/kd.jsonl") and dconf["hybrid_lambda"] == 1.0
    lam = {c["args"].output_dir.split("/distill/")[1].split("/")[0]: c["args"].hybrid_lambda
           for name, c in fake.calls if name == "distill"}
    assert lam == {"kd": 1.0, "leaf_instr": 0.5, "leaf_instr_resp": 0.5}
    assert {k: v["hybrid_lambda"] for k, v in results["variants"].items()} == lam
    # results: fixed models with a Wilson interval, variants with a t interval over seeds
    rows = {r["key"]: r for r in results["rows"]}
    assert list(rows) == ["teacher", "student", "kd", "leaf_instr", "leaf_instr_resp"]
    kd_id = rows["kd"]["cells"]["test_id"]
    assert kd_id["values"] == [0.606, 0.706] and kd_id["lo"] < 0.656 < kd_id["hi"]
    assert rows["teacher"]["cells"]["test_anti"]["interval"].startswith("Wilson")
    assert results["counts"]["data"]["sets"]["instruction_span"]["counterfactuals"] == 3
    assert results["detection"]["gradient"]["span_recall"]["mean"] == 1.0
    text = render(results)
    for label in ("Teacher", "Student (Pre-KD)", "KD w/o mask", "LeaF (instruction + response)",
                  "anti-correlated", "span recall", "gradient"):
        assert label in text
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["run"]["status"] == "done"
    from leaf.report.collect import find_run_files  # `leaf report RUN_DIR` finds its inputs

    files = find_run_files(run)
    assert [p.name for p in files.scores] == ["instruction.jsonl", "response.jsonl"]
    assert [p.name for p in files.counterfactuals] == ["instruction_span.jsonl",
                                                       "response_span.jsonl"]
    assert files.data == run / "data" / "screen" / "screened.jsonl"
    assert all(s["status"] == "done" for s in manifest["stages"].values())


def test_rerun_skips_everything_and_a_changed_setting_reruns_only_what_it_affects(
        fake, config, tmp_path):
    run = tmp_path / "run"
    run_pipeline(load_config(config), run, log=lambda s: None)
    fake.calls.clear()
    run_pipeline(load_config(config), run, log=lambda s: None)
    assert fake.calls == []
    over = {"distill": {"args": {"learning_rate": 0.002, "max_steps": 3}}}
    run_pipeline(load_config(config, overrides=over), run, log=lambda s: None)
    cmds = [c[0] for c in fake.calls]
    assert cmds.count("distill") == 6 and cmds.count("eval") == 6 * 3
    assert not {"screen", "detect", "prune"} & set(cmds)
    assert all(Path(c["model"]).name not in ("teacher", "student")
               for name, c in fake.calls if name == "eval")


def test_quick_section_is_merged(config):
    assert load_config(config).seeds == [0, 1]
    assert load_config(config, quick=True).seeds == [0]


@pytest.mark.parametrize("patch, message", [
    ({"bogus": 1}, "bogus: unknown key"),
    ({"distill": {"variants": {"x": ["nope"]}}}, "unknown counterfactual set"),
    ({"distill": {"args": {"hybrid_lambda": 0.3}}}, r"distill.args.hybrid_lambda: set by the"),
    ({"distill": {"args": {"seed": 3}}}, r"distill.args.seed: set by the pipeline; use seeds"),
    ({"distill": {"args": {"learning_rat": 3}}}, r"distill.args.learning_rat: unknown field "
                                                 r"\(did you mean 'learning_rate'\?\)"),
    ({"distill": {"hybrid_lambda": 2}}, r"distill.hybrid_lambda: must be <= 1.0"),
    ({"distill": {"variants": {"kd": {"sets": [], "hybrid_lambda": -1}}}},
     r"distill.variants.kd.hybrid_lambda: must be >= 0.0"),
    ({"prune": {"tau": 1.5}}, r"prune.tau: must be <= 1.0, got 1.5"),
    ({"prune": {"quantile": "low"}}, r"prune.quantile: expected float"),
    ({"counterfactuals": {"s": {"level": "instruction", "strategy": "spam"}}},
     r"counterfactuals.s.strategy: expected one of .*did you mean 'span'"),
    ({"detect": {"segments": 1}}, r"detect.segments: must be >= 2"),
    ({"seeds": [0, 0]}, "seeds: a non-empty list of distinct"),
    ({"seeds": ["a"]}, r"seeds\[0\]: expected int"),
    ({"screen": {"batch_size": 0}}, r"screen.batch_size: must be >= 1"),
    ({"quick": {"data": {"biass": 1}}}, r"quick.data.biass: unknown key"),
    ({"detection": {"rules": {"g": "response_span"}}}, "must be instruction level"),
    ({"data": {"train": None, "tests": None}}, "give either"),
])
def test_bad_config_names_the_problem(config, patch, message):
    raw = yaml.safe_load(config.read_text())
    for k, v in patch.items():
        raw[k] = {**raw[k], **v} if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(LeafError, match=message):
        load_config(config)


def test_set_overrides_merge_into_the_config(config):
    from leaf.commands.run import parse_sets

    sets = parse_sets(["distill.args.max_steps=9", "seeds=[3, 4]", "name=x"])
    assert sets == {"distill": {"args": {"max_steps": 9}}, "seeds": [3, 4], "name": "x"}
    cfg = load_config(config, overrides=sets)
    assert cfg.distill.args == {"learning_rate": 0.001, "max_steps": 9}
    assert cfg.seeds == [3, 4] and cfg.name == "x"
    with pytest.raises(LeafError, match="KEY=VALUE"):
        parse_sets(["nokey"])


def test_make_results_writes_tables_and_reading(fake, config, tmp_path):
    import subprocess
    import sys

    demo = tmp_path / "demo"
    run_pipeline(load_config(config), demo / "fake", log=lambda s: None)
    out = tmp_path / "RESULTS.md"
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_results.py"
    subprocess.run([sys.executable, str(script), str(demo), "--out", str(out)], check=True,
                   capture_output=True)
    text = out.read_text()
    for needle in ("## Commands", "## Machine", "torch", "KD w/o mask", "What the numbers show",
                   "LeaF (instruction + response) minus KD w/o mask",
                   "do not show"):
        assert needle in text, needle


def test_testbed_data_is_drawn_per_seed_and_shared_by_the_variants(tmp_path):
    from leaf.pipeline.plan import build_stages

    for role in ("teacher", "student"):
        (tmp_path / role).mkdir()
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"testbed": "digit_sum", "seed": 10, "sizes": {"train": 5, "test_id": 2,
                                                               "test_anti": 2, "test_clean": 0}},
        "teacher": str(tmp_path / "teacher"), "student": str(tmp_path / "student"),
        "seeds": [0, 1], "distill": {"variants": {"kd": [], "leaf_instr": ["instruction_span"]}},
    }))
    cfg = load_config(path)
    stages = {s.name: s for s in build_stages(cfg, tmp_path / "run")}
    assert stages["data_data0"].params["seed"] == 10 and stages["data_data1"].params["seed"] == 11
    assert {"screen_data0", "screen_data1", "trainset_data1_kd", "distill_kd-s1"} <= set(stages)
    assert stages["distill_kd-s1"].inputs["train"] == tmp_path / "run/data1/train/kd.jsonl"
    assert stages["distill_kd-s1"].params["config"]["seed"] == 1
    # random-masking seed follows the run
    assert stages["prune_data1_instruction_span"].params["prune"]["seed"] == 1
    # teacher and student are evaluated on every replicate's splits; test_clean (size 0) is skipped
    assert ("teacher", "data1") in cfg.model_keys() and ("kd-s1", "data1") in cfg.model_keys()
    assert "eval_student_data1_test_anti" in stages and "eval_student_data1_test_clean" not in stages


@pytest.mark.parametrize("override, key", [
    ("data.biass=0.8", "data.biass: unknown key (did you mean 'bias'?)"),
    ("distil.hybrid_lambda=0.3", "distil: unknown key (did you mean 'distill'?)"),
    ("prune.tau=1.5", "prune.tau: must be <= 1.0, got 1.5"),
    ("distill.hybrid_lambda=2", "distill.hybrid_lambda: must be <= 1.0, got 2"),
])
def test_leaf_run_refuses_a_bad_set_before_any_stage(override, key, tmp_path, capsys,
                                                      monkeypatch):
    from leaf.cli import main
    from leaf.pipeline.config import PACKAGE_DIR

    def no_stage(*a, **k):
        raise AssertionError("a stage ran")

    for name in ("screen", "detect", "prune", "distill", "evaluate"):
        monkeypatch.setattr(leaf_stages, name, no_stage)
    run = tmp_path / "run"
    rc = main(["run", str(PACKAGE_DIR / "configs" / "testbed" / "digit_sum.yaml"), "--quick",
               "--set", override, "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and key in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_extra_kd_rows_control_and_paired_differences(fake, config, tmp_path):
    raw = yaml.safe_load(config.read_text())
    raw["distill"]["variants"]["extra_kd"] = {"extra_originals": "instruction_span"}
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    results = run_pipeline(load_config(config), run, log=lambda s: None)
    leaf_rows = read_jsonl(run / "data" / "train" / "leaf_instr.jsonl")
    extra = read_jsonl(run / "data" / "train" / "extra_kd.jsonl")
    cfs = [r for r in leaf_rows if r["kind"] == "counterfactual"]
    copies = [r for r in extra if r["kind"] == "counterfactual"]
    assert len(cfs) == len(copies) == 2 and len(extra) == 6 + 2
    originals = {r["id"]: r for r in extra if r["kind"] == "original"}
    for c in copies:  # an unpruned copy of the original of each kept counterfactual
        assert c["instruction"] == originals[c["origin_id"]]["instruction"]
        assert c["pruned"] == [] and c["masking"] == "none" and c["id"].endswith("#x0")
    assert sorted(c["origin_id"] for c in copies) == sorted(c["origin_id"] for c in cfs)
    assert results["variants"]["extra_kd"]["hybrid_lambda"] == 0.5
    diffs = {d["key"]: d for d in results["differences"]}
    assert set(diffs) == {"leaf_instr", "leaf_instr_resp", "extra_kd"}
    cell = diffs["leaf_instr"]["cells"]["test_anti"]  # 8 training rows against KD's 6
    assert cell["values"] == pytest.approx([0.002, 0.002]) and diffs["leaf_instr"]["pairs"] == 2
    text = render(results)
    assert text.startswith("## LeaF minus KD, paired by seed")
    assert "LeaF (instruction) - KD w/o mask" in text and "+0.002" in text


def test_controls_build_their_training_files(fake, config, tmp_path):
    raw = yaml.safe_load(config.read_text())
    raw["counterfactuals"].update({
        "instruction_unverified": {"level": "instruction", "verify": False},
        "planted_all": {"level": "instruction", "masking": "planted", "rows": "all",
                        "verify": True}})
    raw["distill"]["variants"] = {
        "kd": [], "leaf_instr": ["instruction_span"],
        "extra_kd_hard": {"extra_originals": "instruction_span"},
        "extra_kd": {"extra_originals": "instruction_span"},  # the old name: the same control
        "extra_kd_random": {"extra_originals": "instruction_span", "extra_draw": "random"},
        "unverified": ["instruction_unverified"], "planted_all": ["planted_all"]}
    raw["seeds"] = [0]
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    results = run_pipeline(load_config(config), run, log=lambda s: None)
    files = {v: read_jsonl(run / "data" / "train" / f"{v}.jsonl") for v in raw["distill"]["variants"]}
    originals = [r["id"] for r in files["kd"]]
    assert len(originals) == 6 and all(r["kind"] == "original" for r in files["kd"])

    def extra(v):
        assert [r["id"] for r in files[v] if r["kind"] == "original"] == originals
        return [r for r in files[v] if r["kind"] == "counterfactual"]

    kept = extra("leaf_instr")  # screened: 3 student-wrong rows, 2 of them verified
    assert len(kept) == 2
    hard = extra("extra_kd_hard")
    assert sorted(c["origin_id"] for c in hard) == sorted(c["origin_id"] for c in kept)
    assert all(c["masking"] == "none" and c["pruned"] == [] for c in hard)
    assert files["extra_kd"] == files["extra_kd_hard"]
    rand = extra("extra_kd_random")  # as many copies, drawn from all originals
    assert len(rand) == len(kept) and all(c["masking"] == "none" for c in rand)
    assert {c["origin_id"] for c in rand} <= set(originals)
    by_id = {r["id"]: r for r in files["kd"]}
    assert all(c["instruction"] == by_id[c["origin_id"]]["instruction"] for c in rand)
    unverified = extra("unverified")  # every scored row's counterfactual, none checked
    assert len(unverified) == 3 and all(c["verified"] is None for c in unverified)
    planted_all = extra("planted_all")  # pruned from every training row, then verified
    prune_calls = {Path(c[1]["out"]).stem: c[1] for c in fake.calls if c[0] == "prune"}
    assert prune_calls["planted_all"]["options"].masking == "planted"
    assert len(planted_all) == 4 and len({c["origin_id"] for c in planted_all}) == 4
    assert {c["origin_id"] for c in planted_all} - {c["origin_id"] for c in kept}
    labels = {r["key"]: r["label"] for r in results["rows"]}
    assert labels["extra_kd_random"] == "extra KD rows, random originals (control)"
    assert labels["extra_kd"] == labels["extra_kd_hard"]
    assert labels["unverified"] == "LeaF without verification (control)"
    assert labels["planted_all"] == "planted removal from every row (oracle)"


def test_random_extra_copies_are_seeded(tmp_path):
    train = write_jsonl_path(tmp_path / "train.jsonl", [_sample(i, "train") for i in range(50)])
    cf = write_jsonl_path(tmp_path / "cf.jsonl", [
        {**_sample(i, "train"), "id": f"train-{i}#i0", "origin_id": f"train-{i}",
         "kind": "counterfactual", "verified": True} for i in range(10)])
    draws = []
    for seed in (0, 0, 1):
        out = tmp_path / f"t{len(draws)}.jsonl"
        plan.build_train_file(train, {}, out, cf, "random", seed)
        draws.append([r["origin_id"] for r in read_jsonl(out) if r["kind"] == "counterfactual"])
    assert len(draws[0]) == 10 and draws[0] == draws[1] and draws[0] != draws[2]


def test_config_refuses_all_rows_without_planted_masking(config):
    raw = yaml.safe_load(config.read_text())
    raw["counterfactuals"]["instruction_span"]["rows"] = "all"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(LeafError, match="counterfactuals.instruction_span.rows"):
        load_config(config)


def test_a_variant_without_counterfactuals_says_so(fake, config, tmp_path, monkeypatch, capsys):
    real = fake.prune

    def reject_all(data, scores, out, options=None, verify=None):
        real(data, scores, out, options, verify)
        rows = read_jsonl(out)
        write_jsonl_atomic(out, [{**r, "verified": False} if r["kind"] == "counterfactual"
                                 and verify else r for r in rows])

    monkeypatch.setattr(leaf_stages, "prune", reject_all)
    results = run_pipeline(load_config(config), tmp_path / "run", log=lambda s: None)
    # `leaf run` warns before training each such variant and seed; plain KD is not warned about
    err = capsys.readouterr().err
    warned = sorted(x.split("'")[1] + x.split("(seed ")[1][0] for x in err.splitlines()
                    if x.startswith("leaf run: warning:") and "no counterfactuals" in x)
    assert warned == ["leaf_instr0", "leaf_instr1", "leaf_instr_resp0", "leaf_instr_resp1"]
    rows = {r["key"]: r for r in results["rows"]}
    assert rows["leaf_instr"]["counterfactual_rows"] == [0, 0]
    diffs = {d["key"]: d for d in results["differences"]}
    assert diffs["leaf_instr"]["pairs"] == 0 and diffs["leaf_instr"]["cells"] == {}
    assert diffs["leaf_instr"]["runs_without_counterfactuals"] == 2
    text = render(results)
    line = next(x for x in text.splitlines()
                if x.startswith("| LeaF (instruction) ") and "KD w/o mask" not in x)
    assert "trained on 0 counterfactuals" in line and "0.6" not in line
    assert "no run had counterfactuals" in text


def test_a_variant_with_sets_and_lambda_one_is_warned_at_plan_time(config):
    from leaf.pipeline.plan import plan_warnings

    cfg = load_config(config)
    assert plan_warnings(cfg) == []
    raw = yaml.safe_load(config.read_text())
    variant = {"sets": ["instruction_span"], "hybrid_lambda": 1.0}
    raw["distill"]["variants"]["leaf_instr"] = variant
    config.write_text(yaml.safe_dump(raw))
    assert plan_warnings(load_config(config)) == []  # uniform mixing: no lambda, rows count
    variant["args"] = {"mixing": "paired"}
    config.write_text(yaml.safe_dump(raw))
    (warning,) = plan_warnings(load_config(config))
    assert "'leaf_instr'" in warning and "plain KD" in warning


def test_testbed_shift_splits_are_generated_evaluated_and_tabulated(fake, tmp_path):
    from leaf.pipeline.plan import build_stages

    for role in ("teacher", "student"):
        (tmp_path / role).mkdir()
        (tmp_path / role / "config.json").write_text("{}")
    raw = {
        "data": {"testbed": "word_problem", "sizes": {
            "train": 6, "test_id": 3, "test_anti": 3, "test_clean": 0, "test_anti_moved": 4,
            "test_anti_two": 5, "test_anti_topic": 2}},
        "teacher": str(tmp_path / "teacher"), "student": str(tmp_path / "student"),
        "seeds": [0], "distill": {"args": {"max_steps": 3}, "variants": {"kd": []}},
        "attention": {"enabled": True},
    }
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    assert cfg.test_splits() == ["test_id", "test_anti", "test_anti_moved", "test_anti_two",
                                 "test_anti_topic"]
    # the reliance/attention stage keeps measuring test_anti unless attention.split says
    assert {s.name: s for s in build_stages(cfg, tmp_path / "x")}["attention"].params[
        "split"] == "test_anti"
    raw["attention"] = {"enabled": False}
    path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    results = run_pipeline(load_config(path), run, log=lambda s: None)
    for split, n in (("test_anti_moved", 4), ("test_anti_two", 5), ("test_anti_topic", 2)):
        rows = read_jsonl(run / "data0" / "data" / f"{split}.jsonl")
        assert len(rows) == n and {r["split"] for r in rows} == {split}
        evaluated = [c for name, c in fake.calls if name == "eval" and
                     Path(c["out"]).name == split]
        assert len(evaluated) == 3  # teacher, student, kd
    cells = {r["key"]: r["cells"] for r in results["rows"]}
    assert cells["kd"]["test_anti_two"]["values"] and "test_clean" not in cells["kd"]
    text = render(results)
    for label in ("anti, moved", "anti, two distractors", "anti, in-topic"):
        assert label in text


@pytest.mark.parametrize("sizes, message", [
    ({"test_anti_far": 10}, r"data.sizes.test_anti_far: unknown split; known: \[.*"
                            r"'test_anti_moved', 'test_anti_two', 'test_anti_topic'\]"),
    ({"test_anti_two": 10}, r"data.sizes.test_anti_two: the digit_sum family cannot express"),
])
def test_an_unknown_or_inexpressible_testbed_split_is_one_clear_message(tmp_path, sizes,
                                                                        message):
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump({"data": {"testbed": "digit_sum", "sizes": sizes}}))
    with pytest.raises(LeafError, match=message):
        load_config(path)
