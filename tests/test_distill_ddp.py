"""Multi-process runs. Two-process DDP on CPU (gloo, via torch.distributed.run) with gradient
accumulation equals one process with the same global batch (the loss is normalised over the
global batch, not per process, and the mixing sampler gives each process its share of the same
batch), also when stopped in the middle of an epoch and resumed; a killed `leaf distill` process
resumes to the uninterrupted weights (slow)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import leaf
from conftest import write_jsonl
from distill_rows import training_rows
from leaf.distill.config import DistillArguments
from leaf.distill.recipe import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_single_process(tmp_path, tiny_llama_dir, tiny_llama_big_dir):
    # 6 originals + 12 counterfactuals; global batch 4 originals (+ 4 counterfactuals, paired)
    # = 1 x 2 accumulation steps x 2 processes, or 4 in one process: 2 steps per epoch (the
    # second completed from the start). SGD makes the update proportional to the gradient
    # (Adam's first steps are sign-like and would hide a wrongly weighted loss).
    train_file = write_jsonl(tmp_path / "cf.jsonl", training_rows(6, unverified=False))
    config = dict(
        teacher_model=str(tiny_llama_big_dir), student_model=str(tiny_llama_dir),
        train_file=str(train_file), use_cpu=True, optim="sgd", learning_rate=2.0,
        lr_scheduler_type="constant", warmup_steps=0, max_steps=6, logging_steps=1,
        save_strategy="steps", save_steps=3, seed=0, report_to="none", disable_tqdm=True,
        max_length=256, hybrid_lambda=0.3, mixing="paired",
    )
    single = train(DistillArguments(**config, output_dir=str(tmp_path / "single"),
                                    per_device_train_batch_size=4))
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(leaf.__file__).parents[1])}

    def ddp(max_steps: int) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "leaf.cli", "distill", "--config", str(path),
               "--output_dir", str(tmp_path / "ddp"), "--per_device_train_batch_size", "1",
               "--gradient_accumulation_steps", "2", "--max_steps", str(max_steps)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    # stopped after step 3, in the middle of epoch 1, then resumed from checkpoint-3 (the
    # constant learning rate makes the first run's schedule that of the whole run)
    ddp(3)
    assert (tmp_path / "ddp" / "checkpoint-3").is_dir()
    ddp(6)

    start = load_file(tiny_llama_dir / "model.safetensors")
    ddp_weights = load_file(tmp_path / "ddp" / "model.safetensors")
    ref = {k: v.detach() for k, v in single.model.state_dict().items()}
    assert max((ref[k] - start[k]).abs().max().item() for k in start) > 1e-3  # it trained
    for k in ref:  # tolerance: 1e-6 absolute + 1e-5 relative (float32 all-reduce order)
        assert torch.allclose(ddp_weights[k], ref[k], atol=1e-6, rtol=1e-5), k
    usage = json.loads((tmp_path / "ddp" / "counterfactual_usage.json").read_text())
    assert usage == single.counterfactual_usage
    state = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if "loss" in h]
    assert [h["step"] for h in logged] == list(range(1, 7))
    for h, want in zip(logged, (h for h in single.state.log_history if "loss" in h)):
        for key in ("loss", "loss_kd", "loss_cd", "share_cd", "weight_cd"):
            assert h[key] == pytest.approx(want[key], rel=1e-4, abs=1e-7), key


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_the_same_weights(tmp_path, tiny_llama_dir,
                                                        tiny_llama_big_dir):
    """A `leaf distill` process killed (SIGKILL) after a checkpoint, then run again with the
    same command, ends with the weights of an uninterrupted run (1e-6 absolute)."""
    train_file = write_jsonl(tmp_path / "cf.jsonl", training_rows(4, unverified=False))
    config = dict(
        teacher_model=str(tiny_llama_big_dir), student_model=str(tiny_llama_dir),
        train_file=str(train_file), use_cpu=True, learning_rate=1e-3, warmup_steps=2,
        max_steps=60, logging_steps=5, save_strategy="steps", save_steps=10, seed=0,
        report_to="none", disable_tqdm=True, max_length=256, per_device_train_batch_size=2,
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(leaf.__file__).parents[1])}

    def command(out):
        return [sys.executable, "-m", "leaf.cli", "distill", "--config", str(path),
                "--output_dir", str(out)]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoint-10" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint-10 appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before the kill"
    subprocess.run(command(killed), env=env, check=True, capture_output=True, timeout=300)
    subprocess.run(command(tmp_path / "full"), env=env, check=True, capture_output=True,
                   timeout=300)
    a = load_file(killed / "model.safetensors")
    b = load_file(tmp_path / "full" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
