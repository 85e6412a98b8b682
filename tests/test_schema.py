"""One schema: every setting's default and help come from the stage option dataclasses, which the
command-line flags and the run-config sections are made from; errors name the setting the way
its caller wrote it; the runtime section reaches distillation."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from distill_rows import training_rows
from leaf.cli import build_parser
from leaf.commands._options import build, option_help
from leaf.pipeline.config import (
    PRUNE_DEFAULTS,
    CounterfactualSet,
    DetectConfig,
    PruneDefaults,
    RunConfig,
    load_config,
    variant_arguments,
)
from leaf.settings import SettingError, default_of, help_of, run_defaults
from leaf.stages.options import (
    DEFAULT_MAX_NEW_TOKENS,
    DetectOptions,
    EvalOptions,
    GenerationOptions,
    GradingOptions,
    PruneOptions,
    TeacherCacheOptions,
    VerifyOptions,
)

OPTION_CLASSES = (DetectOptions, EvalOptions, GenerationOptions, GradingOptions, PruneOptions,
                  TeacherCacheOptions, VerifyOptions)


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def field_flags() -> list[tuple[str, argparse.Action]]:
    return [(name, a) for name, sub in subparsers().items() for a in sub._actions
            if hasattr(a, "option_field")]


def test_every_flag_of_an_option_field_takes_its_default_and_help_from_the_field():
    flags = field_flags()
    for name, action in flags:
        cls, field = action.option_field
        where = f"leaf {name} {action.option_strings[0]}"
        if name == "report":  # shows what the counterfactual rows record unless given
            assert action.default is None and help_of(cls, field) in action.help, where
            continue
        assert action.default == default_of(cls, field), where
        # the field's help and default, after what the subcommand says first ("with --verify: ")
        assert action.help.endswith(option_help(cls, field)), where
    seen = {(n, a.option_strings[0]) for n, a in flags}
    expected = {("prune", f) for f in ("--tau", "--threshold-mode", "--quantile", "--strategy",
                                       "--masking", "--seed", "--verify-chunk", "--batch-size",
                                       "--max-new-tokens", "--device", "--dtype")}
    expected |= {("detect", f) for f in ("--level", "--segments", "--batch-size", "--all",
                                         "--skip-last", "--max-length", "--device", "--dtype")}
    expected |= {(c, f) for c in ("screen", "eval") for f in (
        "--batch-size", "--max-new-tokens", "--temperature", "--top-p", "--seed", "--backend",
        "--device", "--dtype")}
    expected |= {("eval", "--num-samples"), ("grade", "--k"), ("grade", "--workers"),
                 ("grade", "--code-timeout"), ("report", "--tau"), ("report", "--quantile"),
                 ("report", "--threshold-mode"), ("teacher-cache", "--top-k"),
                 ("teacher-cache", "--max-length"), ("teacher-cache", "--batch-size")}
    assert expected <= seen, sorted(expected - seen)


def test_literal_fields_give_the_flags_their_choices():
    acts = {(n, a.option_strings[0]): a for n, a in field_flags()}
    assert set(acts["prune", "--masking"].choices) == {"gradient", "random", "ppl", "planted"}
    assert set(acts["report", "--threshold-mode"].choices) == {"fixed", "quantile", "iqr"}
    assert acts["prune", "--tau"].type is float and acts["detect", "--batch-size"].type is int


def _field(cls, name):
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def test_run_config_sections_are_made_of_the_stage_options():
    detect = {f.name for f in dataclasses.fields(DetectConfig)} - {"levels"}
    assert detect == {f.name for f in dataclasses.fields(DetectOptions)} - {"level"}
    for name in detect:
        assert default_of(DetectConfig, name) == default_of(DetectOptions, name, run=True)
        assert help_of(DetectConfig, name) == help_of(DetectOptions, name)
        assert _field(DetectConfig, name).metadata["ge"] == _field(DetectOptions, name).metadata["ge"]
    # the run's detect batch is the one difference, declared beside the option
    assert default_of(DetectOptions, "batch_size") is None
    assert default_of(DetectOptions, "batch_size", run=True) == DetectConfig().batch_size == 16
    for name in PRUNE_DEFAULTS:
        assert default_of(PruneDefaults, name) == default_of(PruneOptions, name)
        assert help_of(PruneDefaults, name) == help_of(PruneOptions, name)
        assert getattr(CounterfactualSet(), name) is None  # an override, unset by default
        assert _field(CounterfactualSet, name).metadata["le"] == _field(PruneOptions, name).metadata["le"]
    for name in ("strategy", "masking"):
        assert default_of(CounterfactualSet, name) == default_of(PruneOptions, name)
    for section in ("screen", "evaluate"):
        made = default_of(RunConfig, section)
        assert made == run_defaults(GenerationOptions)
        assert made.batch_size == 64  # GenerationOptions says so
        # one answer budget for commands and run configs: a run that sets none cuts nothing
        # a command would not
        assert made.max_new_tokens == GenerationOptions().max_new_tokens == DEFAULT_MAX_NEW_TOKENS
        assert "run" not in _field(GenerationOptions, "max_new_tokens").metadata
    assert (GenerationOptions().batch_size, GenerationOptions().max_new_tokens) == (8, 512)


def _config(tmp_path, **over) -> Path:
    for role in ("teacher", "student"):
        (tmp_path / role).mkdir(exist_ok=True)
    raw = {"data": {"testbed": "digit_sum"}, "teacher": str(tmp_path / "teacher"),
           "student": str(tmp_path / "student"), **over}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_written_section_keeps_the_run_defaults_it_does_not_set(tmp_path):
    cfg = load_config(_config(tmp_path, screen={"batch_size": 4}, runtime={"device": "cuda"}))
    assert (cfg.screen.batch_size, cfg.screen.max_new_tokens, cfg.screen.device) == (4, 512, "cuda")
    assert cfg.evaluate.max_new_tokens == 512 and cfg.detect_options("response").device == "cuda"
    assert cfg.detect_options("instruction").batch_size == 16


def test_one_setting_is_named_as_its_caller_writes_it(tmp_path):
    with pytest.raises(SettingError, match=r"^PruneOptions\.tau: must be <= 1\.0, got 2\.0$"):
        PruneOptions(tau=2.0)
    with pytest.raises(SettingError, match=r"^--tau must be in \[0, 1\], got 2\.0$"):
        build(PruneOptions, tau=2.0)
    with pytest.raises(SettingError, match=r"prune\.tau: must be <= 1\.0, got 2"):
        load_config(_config(tmp_path, prune={"tau": 2}))
    with pytest.raises(SettingError, match=r"counterfactuals\.s\.tau: must be <= 1\.0"):
        load_config(_config(tmp_path, counterfactuals={"s": {"tau": 2}}))
    with pytest.raises(SettingError, match=r"runtime\.device: auto, cpu, cuda or cuda:N"):
        load_config(_config(tmp_path, runtime={"device": "gpu"}))
    with pytest.raises(SettingError, match=r"detect\.levels: a non-empty list"):
        load_config(_config(tmp_path, detect={"levels": []}))


def test_old_spellings_still_work_with_one_deprecation_line(tmp_path, capsys):
    cfg = load_config(_config(tmp_path, device="cuda", threads=2, detect={"all": True}))
    assert (cfg.runtime.device, cfg.runtime.threads, cfg.detect.score_all) == ("cuda", 2, True)
    assert cfg.screen.device == "cuda" and cfg.detect_options("instruction").score_all
    err = capsys.readouterr().err
    assert "deprecated: device, threads at the top" in err and "runtime.device" in err
    assert "deprecated: detect.all: write detect.score_all" in err


def test_runtime_reaches_distillation(tmp_path):
    cpu = load_config(_config(tmp_path))
    args = variant_arguments(cpu, "kd", 0, tmp_path / "out")
    assert args.use_cpu and not args.bf16 and not args.fp16
    bf16 = load_config(_config(tmp_path, runtime={"device": "cpu", "dtype": "bfloat16"}))
    args = variant_arguments(bf16, "kd", 0, tmp_path / "out")
    assert args.use_cpu and args.bf16 and args.student_dtype == "float32"
    # the variant's own args win over the runtime's
    own = load_config(_config(tmp_path, runtime={"dtype": "bfloat16"},
                              distill={"args": {"bf16": False}}))
    assert not variant_arguments(own, "kd", 0, tmp_path / "out").bf16
    with pytest.raises(SettingError, match=r"runtime\.dtype: float16 .* needs a GPU"):
        load_config(_config(tmp_path, runtime={"device": "cpu", "dtype": "float16"}))


def test_distill_arguments_errors_name_the_run_config_key(tmp_path):
    with pytest.raises(SettingError, match=r"distill\.args\.max_steps: invalid int value"):
        load_config(_config(tmp_path, distill={"args": {"max_steps": "many"}}))
    with pytest.raises(SettingError, match=r"distill\.variants\.kd\.args\.divergence: "
                                           r"divergence must be one of"):
        load_config(_config(tmp_path, distill={"variants": {"kd": {"args": {"divergence": "x"}}}}))


def test_bf16_runtime_trains_with_autocast_over_float32_weights(tmp_path, tiny_llama_dir):
    import torch

    from conftest import write_jsonl
    from leaf.distill.recipe import build_trainer

    train = write_jsonl(tmp_path / "cf.jsonl", training_rows(4, unverified=False))
    cfg = load_config(_config(tmp_path, runtime={"device": "cpu", "dtype": "bfloat16"},
                              distill={"args": {
                                  "per_device_train_batch_size": 2, "max_steps": 1,
                                  "learning_rate": 1e-3, "warmup_steps": 0, "save_strategy": "no",
                                  "report_to": "none",
                                  "disable_tqdm": True, "max_length": 256,
                                  "dataloader_num_workers": 0}}))
    cfg.teacher = cfg.student = str(tiny_llama_dir)
    args = variant_arguments(cfg, "kd", 0, tmp_path / "out", train)
    trainer = build_trainer(args)
    assert trainer.args.bf16 and trainer.args.use_cpu
    params = list(trainer.model.parameters())
    assert params and all(p.dtype == torch.float32 for p in params)
    before = [p.detach().clone() for p in params]
    trainer.train()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(),
                                                       strict=True))
