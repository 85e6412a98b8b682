"""Two-process DDP on CPU (gloo, via torch.distributed.run) equals one process with the same
global batch: the hybrid loss is normalised over the global batch, not per process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

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
    train_file = write_jsonl(tmp_path / "cf.jsonl", training_rows(4, unverified=False))  # 12 rows
    # SGD makes the update proportional to the gradient (Adam's first steps are sign-like and
    # would hide a wrongly weighted loss); 12 rows / global batch 4 = 3 full steps.
    config = dict(
        teacher_model=str(tiny_llama_big_dir), student_model=str(tiny_llama_dir),
        train_file=str(train_file), use_cpu=True, optim="sgd", learning_rate=5.0,
        lr_scheduler_type="constant", warmup_steps=0, max_steps=3, logging_steps=1,
        save_strategy="no", seed=0, report_to="none", disable_tqdm=True, max_length=256,
        hybrid_lambda=0.3,
    )
    single = train(DistillArguments(**config, output_dir=str(tmp_path / "single"),
                                    per_device_train_batch_size=4))
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(leaf.__file__).parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "leaf.cli", "distill", "--config", str(path),
           "--output_dir", str(tmp_path / "ddp"), "--per_device_train_batch_size", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    start = load_file(tiny_llama_dir / "model.safetensors")
    ddp = load_file(tmp_path / "ddp" / "model.safetensors")
    ref = {k: v.detach() for k, v in single.model.state_dict().items()}
    assert max((ref[k] - start[k]).abs().max().item() for k in start) > 1e-3  # it trained
    for k in ref:  # tolerance: 1e-6 absolute + 1e-5 relative (float32 all-reduce order)
        assert torch.allclose(ddp[k], ref[k], atol=1e-6, rtol=1e-5), k
