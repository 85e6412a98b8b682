"""`scripts/gpu_check.sh --dry-run`: every step of the GPU check, on the CPU at toy shapes, with
datasets, gguf and liger-kernel hidden (the GPU machine has none of them), so the script cannot
rot between GPU sessions. About 40 s of CPU time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_THE_GPU_MACHINE = ("datasets", "gguf", "liger_kernel")


def test_dry_run_runs_every_step(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    # a module set to None in sys.modules is what an uninstalled one looks like to import and
    # to importlib.util.find_spec (the probes transformers and peft use)
    (hide / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in ABSENT_ON_THE_GPU_MACHINE))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    summary = (out / "gpu_check.md").read_text()
    assert proc.returncode == 0, summary + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Result: every step passed." in summary
    for name in ABSENT_ON_THE_GPU_MACHINE:
        assert f"{name}: absent" in summary
    for step in ("tests", "loss", "detect", "pair", "run"):
        assert f"### {step}: passed" in summary, step
    assert "### 2-ranks: skipped (dry run)" in summary
    assert "### peers: skipped (liger-kernel not installed" in summary
    # the GPU tests ran on the CPU instead of skipping
    assert "3 passed" in (out / "logs" / "tests.log").read_text()
    kl = json.loads((out / "kl.json").read_text())
    assert {"obvious", "fused"} <= set(kl["rows"][0]["peak_mib"])
    assert json.loads((out / "detect.json").read_text())["config"]["dtype"] == "bfloat16"
    # leaf run --quick in bfloat16 on both loss paths, to the end
    run = out / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["quick"] and results["splits"] == ["test_anti"]
    for variant, path in (("kd", "auto"), ("leaf_logits", "logits")):
        cfg = yaml.safe_load((run / "distill" / variant / "seed0" / "config.yaml").read_text())
        assert cfg["bf16"] is True and cfg["teacher_dtype"] == "bfloat16"
        assert cfg.get("kd_loss_path", "auto") == path
