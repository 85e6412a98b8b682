"""benchmarks/bench_kl.py --peers --memory-only: one side per command, appended to one file,
resumed and refused; and section 6's rendering of that file (toy shapes, Liger eager)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common as C  # noqa: E402
import bench_kl  # noqa: E402
import make_performance as mp  # noqa: E402
import peers_memory as PM  # noqa: E402

# every block of both sides (logits chunks, the input and weight gradients) at 128 KiB or more,
# so the children map them and their peaks are resolved (PM.RESOLVED_MIB)
TOY = ["--peers", "--memory-only", "--eager", "--sizes", "512x4000x256", "--dtype", "float32"]


def bench(*args: str) -> int:
    return bench_kl.main([*TOY, *args])


@pytest.fixture(autouse=True)
def keep_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # bench_kl sets its --threads in this process


def test_memory_only_one_side_per_command_resume_and_refusal(tmp_path, capsys, monkeypatch):
    f = tmp_path / "peers_memory.json"
    # the leaf side alone: one entry, one repetition, no row (no peer yet)
    assert bench("--sides", "leaf", "--append", str(f)) == 0
    data = json.loads(f.read_text())
    assert [(e["side"], len(e["peak_mib"])) for e in data["entries"]] == [("fused", 1)]
    assert data["checks"]["float32"] < 1e-5  # the small-shape check ran first
    assert PM.rows(data) == []
    assert "no shape holds leaf and a peer yet" in capsys.readouterr().out

    # Liger, a second command appending to the same file: a complete row, a RATIO line
    assert bench("--sides", "liger", "--append", str(f)) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("RATIO mem_over_best_peer=")
    data = json.loads(f.read_text())
    assert sorted(e["side"] for e in data["entries"]) == ["fused", "liger"]
    assert len(data["commands"]) == 2 and "--sides liger" in data["commands"][1]
    (row,) = PM.rows(data)
    fused, liger = (next(e for e in data["entries"] if e["side"] == s) for s in ("fused", "liger"))
    assert row["unresolved"] == [] and min(fused["peak_mib"] + liger["peak_mib"]) >= 1.0
    assert row["mem_over_best_peer"]["median"] == pytest.approx(
        fused["peak_mib"][0] / liger["peak_mib"][0])
    assert row["max_rel_diff"] < 1e-4  # the same loss and gradients, float32
    assert fused["time_s"][0] > 0  # recorded, not compared

    # a rerun of both sides resumes: everything is there, so no child runs
    def no_child(*a, **k):
        raise AssertionError("a side already in the file ran again")

    monkeypatch.setattr(C, "run_child", no_child)
    assert bench("--sides", "leaf", "liger", "--append", str(f)) == 0
    assert capsys.readouterr().out.count("skipped") == 2
    assert json.loads(f.read_text())["entries"] == data["entries"]

    # other settings, or another leaf commit: one clear message, nothing written
    before = f.read_text()
    with pytest.raises(SystemExit) as e:
        bench("--sides", "leaf", "--threads", "2", "--append", str(f))
    assert "refusing to append" in str(e.value) and "threads: file 1, this run 2" in str(e.value)
    stale = json.loads(before)
    stale["settings"]["leaf_commit"] = "0123abc"
    f.write_text(json.dumps(stale))
    with pytest.raises(SystemExit) as e:
        bench("--sides", "leaf", "--append", str(f))
    assert "leaf_commit: file '0123abc'" in str(e.value)
    assert json.loads(f.read_text()) == stale
    # --json without --append replaces the file (its settings do not matter then)
    monkeypatch.undo()
    assert bench("--sides", "leaf", "--json", str(f)) == 0
    assert [e["side"] for e in json.loads(f.read_text())["entries"]] == ["fused"]


def test_a_partial_entry_runs_only_its_missing_repetitions(tmp_path, monkeypatch):
    f = tmp_path / "m.json"
    settings = {"reps": 2}
    data = PM.new(settings)
    e = PM.entry(data, 64, 500, 32, "float32", "fused")
    e.update(peak_mib=[1.0], time_s=[0.1], loss=[2.0], grad_norms=[[1.0, 1.0]],
             load_1min=[1.0], mode=[""], date_utc=["x"])
    PM.save(f, data)
    # another command wrote a repetition of its own meanwhile: the fuller entry wins
    other = PM.load(f, settings)
    PM.entry(other, 64, 500, 32, "float32", "liger")["peak_mib"].append(3.0)
    PM.save(f, other)
    merged = PM.load(f, settings)
    assert {(x["side"], len(x["peak_mib"])) for x in merged["entries"]} == {("fused", 1),
                                                                            ("liger", 1)}
    with pytest.raises(SystemExit, match="not a results file"):
        (tmp_path / "bad.json").write_text("{")
        PM.load(tmp_path / "bad.json", settings)


def test_a_peak_below_the_resolution_gives_no_ratio(tmp_path, capsys, monkeypatch):
    data = PM.new({"reps": 1, "threads": 2, "check": [192, 3000, 96], "leaf_commit": "f" * 40})
    data["commands"] = PM.PLAN[:2]
    for side, peak in (("fused", 2.0), ("liger", 0.0)):
        PM.entry(data, 64, 500, 32, "float32", side).update(
            peak_mib=[peak], time_s=[0.1], loss=[2.0], grad_norms=[[1.0, 1.0]],
            load_1min=[1.0], mode=[""], date_utc=["x"], mem_method="peak RSS")
    (row,) = PM.rows(data)  # a peak of 0 MiB: no ratio (it divided by zero before)
    assert row["mem_over_best_peer"] is None and row["unresolved"] == ["liger 0.00 MiB"]
    assert "| not resolved |" in "\n".join(mp.render_peers_memory(data))


def test_flags_that_do_not_go_together():
    for argv in (["--memory-only"], ["--peers", "--sides", "leaf"],
                 ["--peers", "--memory-only", "--append", "a.json", "--json", "b.json"]):
        with pytest.raises(SystemExit) as e:
            bench_kl.main(argv)
        assert e.value.code == 2


def fake() -> dict:
    """A memory-only results file at the real shape with made-up numbers (the rendering only)."""
    t, v, h = PM.SHAPE
    data = PM.new({"reps": 1, "threads": 2, "check": [192, 3000, 96], "leaf_commit": "f" * 40})
    data["checks"] = {"float32": 3.7e-7, "bfloat16": 6.1e-3}
    data["commands"] = PM.PLAN[:3]
    data["machine"] = {"date_utc": "2026-12-07 12:00 UTC", "cpu": "AMD EPYC", "cores": 2,
                       "torch_threads": 2, "load_average": "3.0 3.0 3.0", "device": "cpu",
                       "python": "3.11", "torch": "2.13.0+cpu", "transformers": "5.25.0"}
    for dtype, side, peak in (("float32", "fused", 1800.0), ("float32", "liger", 2400.0),
                              ("bfloat16", "fused", 900.0)):
        e = PM.entry(data, t, v, h, dtype, side)
        e.update(peak_mib=[peak], time_s=[1500.0], loss=[1e5], grad_norms=[[10.0, 20.0]],
                 load_1min=[3.0], mode=["compiled (torch.compile)" if side == "liger" else ""],
                 date_utc=["x"], mem_method="peak RSS")
    return data


def test_section_6_renders_the_memory_only_rows(tmp_path):
    text = "\n".join(mp.render_peers_memory(fake()))
    assert "**Memory only at 8192 x 152064**" in text
    assert "time at this shape is for a GPU" in text
    assert "| 8192 x 152064 (2048) | float32 | 1800 [1800-1800] | 2400 [2400-2400] " \
           "| 0.75 [0.75-0.75] |" in text
    assert "bfloat16 (leaf only)" in text  # the half-done dtype is said, not tabled
    assert all(f"`{c}`" in text for c in PM.PLAN[:3])
    assert "time s" not in text  # no timing comparison
    # without the file: the commands that make it
    empty = "\n".join(mp.render_peers_memory(None))
    assert "Not measured yet" in empty and all(c in empty for c in PM.PLAN)
    # and the page puts it in section 6, from results/peers_memory.json
    results = mp.load_results(mp.RESULTS)
    results[PM.NAME] = fake()
    page = mp.render_page(results, {})
    peers = page.split("## 6. Peers")[1].split("### The trainer")[0]
    assert "**Memory only at 8192 x 152064**" in peers and "0.75 [0.75-0.75]" in peers
