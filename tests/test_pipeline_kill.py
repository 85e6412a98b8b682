"""`leaf run` on tiny real models, killed with SIGKILL at random moments, ends as if never killed.

Slow (several minutes on 2 shared cores): every stage loads models. The fast variant with fake
stages is in test_pipeline_runner.py.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from leaf.testbed.tiny import save_tiny

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[1] / "src"


def _sample(i: int, split: str) -> dict:
    return {"id": f"{split}-{i}", "task": "math",
            "instruction": f"a = {i} ; b = 3 ; rumor : 7 ; query a + b ?",
            "response": f"{i} + 3 = {i + 3}. The answer is {i + 3}.", "answer": str(i + 3)}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("killrun")
    save_tiny(root / "student", style="llama3", arch="llama", seed=0)
    save_tiny(root / "teacher", style="llama3", arch="llama", hidden=48, layers=3, heads=4,
              kv_heads=2, seed=1)
    for split, n in (("train", 6), ("test_id", 4), ("test_anti", 4)):
        (root / f"{split}.jsonl").write_text(
            "".join(json.dumps(_sample(i, split)) + "\n" for i in range(n)))
    cfg = {
        "name": "tiny",
        "data": {"train": "train.jsonl",
                 "tests": {"test_id": "test_id.jsonl", "test_anti": "test_anti.jsonl"}},
        "teacher": "teacher", "student": "student",
        "screen": {"batch_size": 4, "max_new_tokens": 8},
        "detect": {"all": True, "batch_size": 2},
        "counterfactuals": {"instruction_span": {"level": "instruction", "verify": True},
                            "response_span": {"level": "response", "verify": True}},
        "seeds": [0],
        "distill": {"variants": {"kd": [], "leaf_instr_resp":
                                                ["instruction_span", "response_span"]},
                    "args": {"max_steps": 6, "save_steps": 2, "per_device_train_batch_size": 2,
                             "max_length": 128, "use_cpu": True, "logging_steps": 1,
                             "disable_tqdm": True, "report_to": "none",
                             "learning_rate": 1.0e-3}},
        "evaluate": {"batch_size": 2, "max_new_tokens": 8},
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _leaf_run(config: Path, run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "leaf.cli", "run", str(config), "--run-dir", str(run_dir),
         "--no-tables"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _close(a, b, path: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: json.dumps(r.get("id")) + json.dumps(r.get("segment")))


def _compare_runs(clean: Path, killed: Path) -> None:
    import torch
    from safetensors.torch import load_file

    outputs = sorted(p.relative_to(clean) for p in clean.rglob("*.jsonl")
                     if "checkpoint-" not in str(p))
    assert outputs
    for rel in outputs:
        _close(_rows(clean / rel), _rows(killed / rel), str(rel))
    for rel in sorted(p.relative_to(clean) for p in clean.rglob("metrics.json")):
        _close(json.loads((clean / rel).read_text()), json.loads((killed / rel).read_text()),
               str(rel))
    for rel in sorted(p.relative_to(clean) for p in clean.glob("distill/*/*/model/*.safetensors")):
        a, b = load_file(clean / rel), load_file(killed / rel)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), f"{rel}:{k}"
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (clean, killed))
    for key in ("models", "rows", "counts"):
        _close(ra[key], rb[key], key)


def _a_stage_is_running(run_dir: Path) -> bool:
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return any(s.get("status") == "running" for s in manifest.get("stages", {}).values())


def test_leaf_run_killed_at_random_points_ends_with_the_same_outputs(tiny_config, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    t0 = time.monotonic()
    proc = _leaf_run(tiny_config, clean)
    assert proc.wait(timeout=900) == 0, proc.stderr.read().decode()[-3000:]
    full = time.monotonic() - t0

    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        proc = _leaf_run(tiny_config, killed)
        time.sleep(rng.uniform(0.15, 0.6) * full)
        while proc.poll() is None and not _a_stage_is_running(killed):
            time.sleep(0.01)  # a kill while the process starts up tests nothing
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    proc = _leaf_run(tiny_config, killed)
    assert proc.wait(timeout=900) == 0, proc.stderr.read().decode()[-3000:]
    assert kills >= 1
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["run"]["status"] == "done"
    assert any(s["attempts"] > 1 for s in manifest["stages"].values())
    _compare_runs(clean, killed)
