"""benchmarks/make_performance.py: a check (``--quick-only``) leaves the tracked files alone."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import make_performance as mp  # noqa: E402

TRACKED = [mp.PAGE, *sorted(mp.RESULTS.glob("*"))]


def fingerprint() -> dict[str, str]:
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in TRACKED if p.is_file()}


def git_status() -> str | None:
    """``git status --porcelain`` of the tracked files under benchmarks/ and docs/ (None
    outside a git checkout)."""
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                               "benchmarks", "docs"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return proc.stdout if proc.returncode == 0 else None


@pytest.fixture
def fake_bench(monkeypatch):
    """The benchmark scripts replaced by a stand-in that prints a RATIO line (the real ones
    take minutes); everything else (argument handling, where files go, rendering) is real."""
    ran = []

    def run_quick(name, extra):
        ran.append(name)
        return {"command": f"python benchmarks/bench_{name}.py --quick", "wall_s": 1.0,
                "last_line": f"RATIO {name}_check=1.23"}

    def run(name, extra, results=mp.RESULTS):
        raise AssertionError("--quick-only ran a full benchmark")

    monkeypatch.setattr(mp, "run_quick", run_quick)
    monkeypatch.setattr(mp, "run", run)
    return ran


def test_quick_only_writes_to_out_not_the_checkout(fake_bench, tmp_path):
    before, status = fingerprint(), git_status()
    assert mp.main(["--quick-only", "--only", "kl", "--only", "generate",
                    "--out", str(tmp_path)]) == 0
    assert fake_bench == ["kl", "generate"]
    assert fingerprint() == before and git_status() == status
    page = (tmp_path / "PERFORMANCE.md").read_text()
    assert "RATIO kl_check=1.23" in page and "RATIO generate_check=1.23" in page
    # the tracked full results are rendered too, the quick rows of other scripts kept
    assert "## 2. The distillation loss" in page
    assert (tmp_path / "results" / "quick.json").is_file()


def test_quick_only_without_out_uses_a_temporary_directory(fake_bench, capsys):
    before = fingerprint()
    assert mp.main(["--quick-only", "--only", "dp"]) == 0
    assert fingerprint() == before
    printed = capsys.readouterr().out
    written = Path(printed.split("wrote ")[1].split()[0])
    assert written.is_file() and not written.is_relative_to(ROOT)
    assert "RATIO dp_check=1.23" in written.read_text()


def test_write_and_out_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit):
        mp.main(["--render-only", "--write", "--out", str(tmp_path)])


def test_render_only_reproduces_the_tracked_page(tmp_path):
    """The tracked page is what the script renders from the tracked results (nobody edited it
    by hand, and a regeneration changes nothing but what new results change)."""
    assert mp.main(["--render-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "PERFORMANCE.md").read_text() == mp.PAGE.read_text()


def test_a_ratio_whose_repetitions_spread_wide_is_not_telling():
    assert mp.gen_verdict({"median": 0.96, "min": 0.46, "max": 1.22}).startswith("not telling")
    assert mp.gen_verdict({"median": 1.15, "min": 1.11, "max": 1.19}) == "met"
    assert mp.gen_verdict({"median": 0.90, "min": 0.88, "max": 0.93}) == "**missed**"


def test_section_4_quotes_the_quick_generation_figure_and_section_6_the_precision():
    page = mp.PAGE.read_text()
    gen = page.split("## 4. Generation")[1].split("## 5.")[0]
    assert "The current generation figure" in gen and "says nothing either way" in gen
    assert "bench_generate.py --quick --reps" in gen
    peers = page.split("## 6. Peers")[1].split("### The trainer")[0]
    assert "Precision in bfloat16" in peers and "kd_weight_grad_dtype" in peers
