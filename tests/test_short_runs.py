"""Short runs train: with the default warm-up (0) a run config's `max_steps: 2` trains at the
configured learning rate from step 1, and a warm-up taking most of the steps is warned about."""

from __future__ import annotations

import json
import logging
import math

import pytest
import yaml

import leaf.stages as S
from conftest import write_jsonl
from distill_rows import training_rows
from leaf.distill.config import DistillArguments
from leaf.distill.recipe import warmup_share
from leaf.pipeline.config import load_config, variant_arguments


def _run_config(tmp_path, teacher, student, args: dict):
    train = write_jsonl(tmp_path / "train.jsonl", training_rows(4, unverified=False))
    write_jsonl(tmp_path / "test.jsonl", [{"id": "t0", "task": "math", "instruction": "1+1?",
                                            "answer": "2"}])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "name": "short", "data": {"train": "train.jsonl", "tests": {"test": "test.jsonl"}},
        "teacher": str(teacher), "student": str(student), "seeds": [0],
        "runtime": {"device": "cpu"},
        "distill": {"args": {"per_device_train_batch_size": 2, "max_length": 128,
                             "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True,
                             "dataloader_num_workers": 0, **args},
                    "variants": {"kd": []}}}))
    return load_config(path), train


def _train(tmp_path, cfg, train):
    out = tmp_path / "model"
    args = variant_arguments(cfg, "kd", 0, out, train)
    S.distill(args)
    state = json.loads((out / "trainer_state.json").read_text())
    return args, {e["step"]: e for e in state["log_history"] if "learning_rate" in e}


def test_max_steps_2_trains_at_the_configured_rate_from_step_1(tmp_path, tiny_llama_dir,
                                                                tiny_llama_big_dir):
    assert DistillArguments.__dataclass_fields__["warmup_steps"].default == 0
    cfg, train = _run_config(tmp_path, tiny_llama_big_dir, tiny_llama_dir,
                             {"max_steps": 2, "learning_rate": 1e-3,
                              "lr_scheduler_type": "constant"})
    args, logged = _train(tmp_path, cfg, train)
    assert args.warmup_steps == 0
    assert logged[1]["learning_rate"] == pytest.approx(1e-3)
    assert logged[2]["learning_rate"] == pytest.approx(1e-3)


def test_cosine_schedule_starts_at_its_step_1_value_without_warmup(tmp_path, tiny_llama_dir,
                                                                   tiny_llama_big_dir):
    cfg, train = _run_config(tmp_path, tiny_llama_big_dir, tiny_llama_dir,
                             {"max_steps": 2, "learning_rate": 1e-3})  # cosine by default
    _, logged = _train(tmp_path, cfg, train)
    # the rate each step trained with: the cosine schedule at 0 and 1 of 2 steps
    assert logged[1]["learning_rate"] == pytest.approx(1e-3)
    assert logged[2]["learning_rate"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 2)))


def test_a_warmup_taking_half_the_steps_is_warned(tmp_path, tiny_llama_dir, tiny_llama_big_dir,
                                                  caplog):
    cfg, train = _run_config(tmp_path, tiny_llama_big_dir, tiny_llama_dir,
                             {"max_steps": 2, "learning_rate": 1e-3, "warmup_steps": 5})
    with caplog.at_level(logging.WARNING, logger="leaf.distill.recipe"):
        _train(tmp_path, cfg, train)
    lines = [r.getMessage() for r in caplog.records if "warmup_steps" in r.getMessage()]
    assert len(lines) == 1 and "100% of the 2 optimizer steps" in lines[0]


def test_warmup_share():
    assert warmup_share(5, 2) == 1.0 and warmup_share(5, 100) == 0.05
    assert warmup_share(0.5, 10) == 0.5 and warmup_share(0, 10) == 0.0
    assert warmup_share(3, 0) == 0.0
