"""SIGKILL inside the work of `leaf detect`, `leaf prune --verify`, `leaf distill` and `leaf run`,
then run the same command again: the final outputs are byte-identical to an uninterrupted run.

The first stop of each command is a Ctrl-C (SIGINT), which must end it within seconds with exit
code 130, keeping its partial output. Kills are timed from progress, not from the clock: a command is killed once its ``.part`` file
holds a randomly chosen number of rows, or once a randomly chosen checkpoint exists, plus a
random short delay, so each kill lands while the stage has partial output on disk.

Slow (about ten minutes on 2 shared cores): every run loads models.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import leaf
from conftest import write_jsonl
from distill_rows import training_rows

pytestmark = pytest.mark.slow

SRC = Path(leaf.__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(SRC), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def _leaf(*args) -> list[str]:
    return [sys.executable, "-m", "leaf.cli", *map(str, args)]


def _finish(cmd: list[str]) -> None:
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]


def _kill_when(cmd: list[str], ready: Callable[[], bool], rng: random.Random,
               delay: float = 0.3, sig: int = signal.SIGKILL) -> bool:
    """Start ``cmd`` and send it ``sig`` a random moment (up to ``delay`` s) after ``ready()``
    first holds; True when it was stopped that way, False when it finished first (also when
    it finished just as the signal was sent). A SIGINT (Ctrl-C) must end it within a few
    seconds with exit code 130."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None:
        if ready():
            time.sleep(rng.uniform(0, delay))
            if proc.poll() is not None:
                break
            proc.send_signal(sig)
            t0 = time.monotonic()
            err = proc.communicate(timeout=120)[1].decode()
            if proc.returncode == 0:  # it had just finished
                return False
            if sig == signal.SIGINT:
                assert proc.returncode == 130, err[-3000:]
                assert time.monotonic() - t0 < 10 and "Traceback" not in err, err[-3000:]
            return True
        time.sleep(0.005)
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    return False


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _samples(n: int) -> list[dict]:
    return [{"id": f"s{i}", "task": "math",
             "instruction": f"a = {i % 7} ; b = 3 ; rumor : {i % 5} ; query a + b ?",
             "response": f"{i % 7} + 3 = {i % 7 + 3}. The answer is {i % 7 + 3}.",
             "answer": str(i % 7 + 3)} for i in range(n)]


def _kill_rows(cmd: list[str], out: Path, total: int, rng: random.Random, kills: int) -> int:
    """Stop ``cmd`` ``kills`` times (a Ctrl-C, then SIGKILLs), each once ``out.part`` holds a
    random number of rows; then run it to the end. Returns how many stops landed with a
    ``.part`` file."""
    part = out.with_name(out.name + ".part")
    landed = 0
    for i, target in enumerate(sorted(rng.sample(range(1, total), kills))):
        # the first stop is a Ctrl-C: exit 130, the .part file kept
        sig = signal.SIGINT if i == 0 else signal.SIGKILL
        if _kill_when(cmd, lambda t=target: _lines(part) >= t, rng, sig=sig):
            if part.exists():
                landed += 1
            else:  # stopped while moving the finished output into place
                assert out.exists()
    _finish(cmd)
    assert not part.exists()
    return landed


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    from leaf.testbed.tiny import save_tiny

    root = tmp_path_factory.mktemp("killmodels")
    student = save_tiny(root / "student", style="llama3", arch="llama", seed=0)
    teacher = save_tiny(root / "teacher", style="llama3", arch="llama", hidden=48, layers=3,
                        heads=4, kv_heads=2, seed=1)
    return Path(teacher), Path(student)


@pytest.fixture(scope="module")
def scored(models, tmp_path_factory) -> tuple[Path, Path]:
    """Samples and their scores (one uninterrupted `leaf detect`)."""
    teacher, student = models
    root = tmp_path_factory.mktemp("scored")
    data = write_jsonl(root / "data.jsonl", _samples(12))
    scores = root / "scores.jsonl"
    _finish(_leaf("detect", "--teacher", teacher, "--student", student, "--data", data,
                  "--out", scores, "--all", "--device", "cpu"))
    return data, scores


def test_detect_killed_inside_its_work_resumes_to_the_same_bytes(models, tmp_path):
    teacher, student = models
    data = write_jsonl(tmp_path / "data.jsonl", _samples(60))
    args = ["detect", "--teacher", teacher, "--student", student, "--data", data,
            "--level", "both", "--all", "--device", "cpu", "--batch-size", "2"]
    clean, killed = tmp_path / "clean.jsonl", tmp_path / "killed.jsonl"
    _finish(_leaf(*args, "--out", clean))
    landed = _kill_rows(_leaf(*args, "--out", killed), killed, _lines(clean),
                        random.Random(11), kills=4)
    assert landed >= 2
    assert killed.read_bytes() == clean.read_bytes()


def test_prune_verify_killed_inside_its_work_resumes_to_the_same_bytes(models, scored,
                                                                       tmp_path):
    teacher, student = models
    data, scores = scored
    args = ["prune", "--data", data, "--scores", scores, "--threshold-mode", "quantile",
            "--quantile", "0.3", "--verify", "--teacher", teacher, "--student", student,
            "--verify-chunk", "2", "--max-new-tokens", "6", "--batch-size", "4",
            "--device", "cpu"]
    clean, killed = tmp_path / "clean.jsonl", tmp_path / "killed.jsonl"
    _finish(_leaf(*args, "--out", clean))
    rows = [json.loads(line) for line in clean.read_text().splitlines()]
    assert sum(r["kind"] == "counterfactual" for r in rows) >= 6  # verification has work
    landed = _kill_rows(_leaf(*args, "--out", killed), killed, len(rows),
                        random.Random(12), kills=3)
    assert landed >= 2
    assert killed.read_bytes() == clean.read_bytes()


def _distill_config(root: Path, models: tuple[Path, Path], out: Path) -> Path:
    teacher, student = models
    train = write_jsonl(root / "train.jsonl", training_rows(6, unverified=False))
    cfg = {"teacher_model": str(teacher), "student_model": str(student),
           "train_file": str(train), "output_dir": str(out), "use_cpu": True,
           "per_device_train_batch_size": 2, "learning_rate": 1e-3, "warmup_steps": 1,
           "max_steps": 40, "save_steps": 8, "logging_steps": 1, "seed": 0,
           "report_to": "none", "disable_tqdm": True, "max_length": 128,
           "dataloader_num_workers": 0}
    path = root / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _losses(run: Path) -> list[tuple]:
    state = json.loads((run / "trainer_state.json").read_text())
    # the closing summary's train_loss averages the steps this process ran (the trainer's
    # own bookkeeping), and timings differ: every step's logged values must match
    return [tuple(sorted((k, v) for k, v in e.items() if "runtime" not in k
                         and "per_second" not in k and k != "train_loss"))
            for e in state["log_history"]]


def test_distill_killed_inside_its_work_resumes_to_the_same_bytes(models, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _finish(_leaf("distill", "--config", _distill_config(tmp_path, models, clean)))
    cmd = _leaf("distill", "--config", _distill_config(tmp_path, models, killed))
    rng = random.Random(13)
    landed = 0
    for step in (8, 16, 24, 32):  # killed once checkpoint `step` appears, maybe while saving it
        sig = signal.SIGINT if step == 8 else signal.SIGKILL  # first a Ctrl-C: exit 130
        if _kill_when(cmd, lambda s=step: (killed / f"checkpoint-{s}").exists(), rng,
                      delay=0.3, sig=sig):
            landed += 1
    assert landed >= 3
    _finish(cmd)
    assert (killed / "model.safetensors").read_bytes() == \
        (clean / "model.safetensors").read_bytes()
    assert _losses(killed) == _losses(clean)


def _run_config(root: Path, models: tuple[Path, Path]) -> Path:
    teacher, student = models
    for split, n in (("train", 6), ("test_id", 4)):
        write_jsonl(root / f"{split}.jsonl", _samples(n))
    cfg = {
        "name": "kill", "data": {"train": "train.jsonl", "tests": {"test_id": "test_id.jsonl"}},
        "teacher": str(teacher), "student": str(student),
        "screen": {"batch_size": 4, "max_new_tokens": 8},
        "detect": {"all": True, "batch_size": 2},
        "counterfactuals": {"instruction_span": {"level": "instruction", "verify": True}},
        "seeds": [0],
        "distill": {"variants": {"leaf_instr": ["instruction_span"]},
                    "args": {"max_steps": 6, "save_steps": 2, "per_device_train_batch_size": 2,
                             "max_length": 128, "use_cpu": True, "logging_steps": 1,
                             "disable_tqdm": True, "report_to": "none",
                             "learning_rate": 1.0e-3}},
        "evaluate": {"batch_size": 2, "max_new_tokens": 8},
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _progress(run_dir: Path) -> frozenset:
    """What partial work is on disk: each ``.part`` file with its rows, each checkpoint."""
    state = set()
    for p in run_dir.rglob("*.part"):
        state.add((str(p.relative_to(run_dir)), _lines(p)))
    for p in run_dir.rglob("checkpoint-*"):
        state.add((str(p.relative_to(run_dir)), -1))
    return frozenset(state)


# files whose bytes legitimately differ between runs: timings and dates
_VOLATILE = {"manifest.json", "stages.log", "trainer_state.json", "results.json"}


def _final_files(run: Path) -> dict[str, bytes]:
    """Every final file, with the run folder's own path (in configs, training arguments)
    replaced by a placeholder. ``training_args.bin`` is a zipped pickle whose checksums
    change with the path: it is compared as the arguments it holds."""
    import torch

    def content(p: Path) -> bytes:
        if p.name == "training_args.bin":
            args = torch.load(p, weights_only=False).to_dict()
            return json.dumps(args, sort_keys=True, default=str).encode()
        return p.read_bytes()

    here = str(run).encode()
    return {str(p.relative_to(run)): content(p).replace(here, b"RUN")
            for p in run.rglob("*")
            if p.is_file() and p.name not in _VOLATILE
            and not any(part.startswith("checkpoint-") for part in p.parts)}


def test_leaf_run_killed_inside_stages_resumes_to_the_same_bytes(models, tmp_path):
    config = _run_config(tmp_path, models)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    # the uninterrupted run, watched: how many distinct partial states does it pass through?
    seen: set = set()

    def watch() -> bool:
        state = _progress(clean)
        if state:
            seen.add(state)
        return False

    assert not _kill_when(_leaf("run", config, "--run-dir", clean, "--no-tables"), watch,
                          random.Random(0))
    assert len(seen) >= 4
    rng = random.Random(14)
    cmd = _leaf("run", config, "--run-dir", killed, "--no-tables")
    landed = 0
    for i in range(3):
        target = rng.randint(1, max(1, len(seen) // 2))
        states: set = set()

        def ready(t=target, states=states) -> bool:
            state = _progress(killed)
            if state:
                states.add(state)
            return len(states) >= t

        if _kill_when(cmd, ready, rng, sig=signal.SIGINT if i == 0 else signal.SIGKILL):
            landed += 1
    _finish(cmd)
    assert landed >= 2
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["run"]["status"] == "done"
    assert any(s["attempts"] > 1 for s in manifest["stages"].values())
    a, b = _final_files(clean), _final_files(killed)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (clean, killed))
    for key in ("models", "rows", "counts"):
        assert ra[key] == rb[key], key
