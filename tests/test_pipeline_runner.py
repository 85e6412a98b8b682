"""The stage runner: skip finished stages, resume killed ones, re-run what a change affects."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from leaf.data.jsonl import read_jsonl, write_json_atomic
from leaf.data.resumable import ResumableWriter
from leaf.errors import LeafError
from leaf.pipeline.manifest import Manifest
from leaf.pipeline.runner import RunLock, Stage, run_stages


def _chain(run: Path, calls: list[str], scale: int = 2, fail_after: int | None = None):
    """a -> b (depends on a), c independent."""
    a, b, c = run / "a.jsonl", run / "b.json", run / "c.json"

    def make_a():
        calls.append("a")
        with ResumableWriter(a, key=lambda r: r["i"]) as w:
            for i in range(5):
                if i in w.done:
                    continue
                if fail_after is not None and len(w.done) >= fail_after:
                    raise RuntimeError("boom")
                w.write([{"i": i, "v": i * scale}])
                calls.append(f"a{i}")

    def make_b():
        calls.append("b")
        write_json_atomic(b, {"sum": sum(r["v"] for r in read_jsonl(a))})

    def make_c():
        calls.append("c")
        write_json_atomic(c, {"c": 1})

    return [
        Stage("a", make_a, {"out": a}, {}, {"scale": scale}),
        Stage("b", make_b, {"out": b}, {"a": a}, {}),
        Stage("c", make_c, {"out": c}, {}, {}),
    ]


def test_finished_stages_are_skipped(tmp_path):
    calls: list[str] = []
    m = Manifest(tmp_path)
    assert set(run_stages(m, _chain(tmp_path, calls), log=lambda s: None).values()) == {"ran"}
    calls.clear()
    outcome = run_stages(Manifest(tmp_path), _chain(tmp_path, calls), log=lambda s: None)
    assert calls == [] and set(outcome.values()) == {"skipped"}
    rec = json.loads((tmp_path / "manifest.json").read_text())["stages"]["b"]
    assert rec["status"] == "done" and rec["inputs"] == {"a": "a.jsonl"}
    assert rec["outputs"] == {"out": "b.json"} and rec["seconds"] >= 0
    assert len(rec["config_hash"]) == 64 and rec["output_digests"]["out"]


def test_changed_setting_reruns_the_stage_and_what_depends_on_it(tmp_path):
    run_stages(Manifest(tmp_path), _chain(tmp_path, []), log=lambda s: None)
    calls: list[str] = []
    outcome = run_stages(Manifest(tmp_path), _chain(tmp_path, calls, scale=3), log=lambda s: None)
    assert outcome == {"a": "ran", "b": "ran", "c": "skipped"}
    # the old output was removed first, so every unit was recomputed with the new setting
    assert calls.count("a0") == 1
    assert json.loads((tmp_path / "b.json").read_text()) == {"sum": 30}


def test_a_moved_input_named_in_the_parameters_reruns_nothing(tmp_path):
    """A stage whose parameters name a model it reads (as distillation's arguments do) keeps its
    identity when the same model sits at another path; other bytes there re-run it."""
    run = tmp_path / "run"
    run.mkdir()
    calls: list[str] = []

    def stages(model: Path) -> list[Stage]:
        out = run / "trained.json"

        def train():
            calls.append(str(model))
            write_json_atomic(out, {"from": (model / "weights.bin").read_text()})

        return [Stage("train", train, {"out": out}, {"model": model},
                      {"args": {"model_path": str(model), "lr": 0.1}})]

    first, moved = tmp_path / "site-a" / "model", tmp_path / "site-b" / "model"
    for d in (first, moved):
        d.mkdir(parents=True)
        (d / "weights.bin").write_text("w1")
    assert run_stages(Manifest(run), stages(first), log=lambda s: None) == {"train": "ran"}
    assert run_stages(Manifest(run), stages(moved), log=lambda s: None) == {"train": "skipped"}
    (moved / "weights.bin").write_text("w2")  # other bytes at the same path: trained again
    assert run_stages(Manifest(run), stages(moved), log=lambda s: None) == {"train": "ran"}
    assert json.loads((run / "trained.json").read_text()) == {"from": "w2"} and len(calls) == 2


def test_failed_stage_resumes_from_its_partial_output(tmp_path):
    calls: list[str] = []
    with pytest.raises(RuntimeError):
        run_stages(Manifest(tmp_path), _chain(tmp_path, calls, fail_after=3), log=lambda s: None)
    assert Manifest(tmp_path).stage("a")["status"] == "failed"
    assert (tmp_path / "a.jsonl.part").exists() and not (tmp_path / "a.jsonl").exists()
    calls.clear()
    run_stages(Manifest(tmp_path), _chain(tmp_path, calls), log=lambda s: None)
    assert [c for c in calls if c.startswith("a") and c != "a"] == ["a3", "a4"]
    assert json.loads((tmp_path / "b.json").read_text()) == {"sum": 20}
    assert Manifest(tmp_path).stage("a")["attempts"] == 2


def test_missing_output_reruns_stage(tmp_path):
    run_stages(Manifest(tmp_path), _chain(tmp_path, []), log=lambda s: None)
    (tmp_path / "c.json").unlink()
    calls: list[str] = []
    outcome = run_stages(Manifest(tmp_path), _chain(tmp_path, calls), log=lambda s: None)
    assert outcome["c"] == "ran" and outcome["a"] == "skipped"


def test_stage_that_writes_nothing_fails(tmp_path):
    st = Stage("x", lambda: None, {"out": tmp_path / "x.json"})
    with pytest.raises(LeafError, match="without writing"):
        run_stages(Manifest(tmp_path), [st], log=lambda s: None)


def test_run_directory_is_locked(tmp_path):
    with RunLock(tmp_path), pytest.raises(LeafError, match="another"), RunLock(tmp_path):
        pass
    with RunLock(tmp_path):  # released
        pass


# A fake pipeline run in a subprocess: slow units so that SIGKILL lands mid-stage.
SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from leaf.data.jsonl import read_jsonl, write_json_atomic
    from leaf.data.resumable import ResumableWriter
    from leaf.pipeline.manifest import Manifest
    from leaf.pipeline.runner import RunLock, Stage, run_stages

    run = Path(sys.argv[1])
    def units(src, out, n, f):
        def go():
            rows = read_jsonl(src) if src else [{"i": i} for i in range(n)]
            with ResumableWriter(out, key=lambda r: r["i"]) as w:
                for r in rows:
                    if r["i"] in w.done:
                        continue
                    time.sleep(0.01)
                    w.write([{"i": r["i"], "v": f(r)}])
        return go
    a, b = run / "a.jsonl", run / "b.jsonl"
    stages = [
        Stage("a", units(None, a, 30, lambda r: r["i"] ** 2), {"out": a}),
        Stage("b", units(a, b, 0, lambda r: r["v"] + 1), {"out": b}, {"a": a}),
        Stage("sum", lambda: write_json_atomic(run / "s.json",
              {"s": sum(r["v"] for r in read_jsonl(b))}), {"out": run / "s.json"}, {"b": b}),
    ]
    with RunLock(run):
        run_stages(Manifest(run), stages, log=lambda s: None)
""")


def _run_killed(run: Path, script: Path, rng: random.Random, max_kills: int) -> int:
    kills = 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    while True:
        proc = subprocess.Popen([sys.executable, str(script), str(run)], env=env)
        if kills < max_kills:
            time.sleep(rng.uniform(0.3, 1.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        assert proc.wait(timeout=120) == 0
        return kills


def test_killed_fake_pipeline_ends_with_the_same_outputs(tmp_path):
    script = tmp_path / "fake_run.py"
    script.write_text(SCRIPT)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _run_killed(clean, script, random.Random(0), max_kills=0)
    kills = _run_killed(killed, script, random.Random(1), max_kills=3)
    assert kills >= 1
    for name in ("a.jsonl", "b.jsonl", "s.json"):
        assert (clean / name).read_bytes() == (killed / name).read_bytes(), name
    stages = json.loads((killed / "manifest.json").read_text())["stages"]
    assert all(s["status"] == "done" for s in stages.values())
