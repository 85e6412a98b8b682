"""What a run shows while it runs: the estimate of the time left, the live terminal line, and the
lines a log file or a pipe gets."""

from __future__ import annotations

import io

import pytest

from leaf.pipeline.manifest import Manifest
from leaf.pipeline.progress import LiveLine, LogLines, estimate_left
from leaf.pipeline.runner import Stage, run_stages
from leaf.terminal import aside
from terminal import screen_lines


def test_estimate_counts_each_stage_at_the_mean_of_its_own_kind():
    took = {"screen": [30.0], "detect": [50.0, 70.0], "eval": [2.0, 4.0]}
    est = estimate_left(took, ["detect_d0_response", "eval_kd-s0_d0_id", "eval_kd-s0_d0_anti"])
    assert est.seconds == pytest.approx(60 + 3 + 3) and est.untimed == 0
    assert est.text() == "about 66 s left"


def test_an_untimed_kind_is_not_guessed_from_the_other_kinds():
    # the user's case: slow screen/detect/distill stages done, ten quick evaluations to go; the
    # mean of all stages so far (what the estimate used to take) would say 10 x 52 s
    took = {"screen": [60.0], "detect": [90.0, 80.0], "prune": [20.0], "distill": [10.0]}
    evals = [f"eval_m{i}_d0_test" for i in range(10)]
    est = estimate_left(took, evals)
    assert est.seconds == 0 and est.untimed == 10 and est.text() == ""
    # once one evaluation has finished, the other nine are counted at its time
    est = estimate_left({**took, "eval": [15.0]}, evals[1:])
    assert est.seconds == pytest.approx(9 * 15) and est.text() == "about 2 min 15 s left"
    # a mix: what is timed, and how many are not
    est = estimate_left(took, ["distill_leaf-s0", *evals[:2]])
    assert est.seconds == pytest.approx(10) and est.untimed == 2
    assert est.text() == "about 10 s left + 2 stages not timed yet"


def test_light_kinds_count_as_nothing_until_timed_and_the_running_stage_counts_what_is_left():
    est = estimate_left({"eval": [4.0]}, ["eval_x", "results"])
    assert est.seconds == pytest.approx(4) and est.untimed == 0
    assert estimate_left({"results": [1.5]}, ["results"]).seconds == pytest.approx(1.5)
    # a distillation running for 7 s of its kind's usual 10 s: 3 s of it left, then one more
    est = estimate_left({"distill": [10.0]}, ["distill_b-s0"], running=("distill_a-s0", 7.0))
    assert est.seconds == pytest.approx(3 + 10)
    # running past the mean: never negative
    assert estimate_left({"distill": [10.0]}, [], running=("distill_a", 30.0)).seconds == 0
    assert estimate_left({}, []).text() == "about 0.0 s left"


def _stages(tmp_path, n=6, fail_at=None):
    def make(i):
        def fn():
            if i == fail_at:
                raise RuntimeError("boom")
            (tmp_path / f"o{i}").write_text("x")
        return fn
    return [Stage(f"{'eval' if i % 2 else 'screen'}_{i}", make(i), {"o": tmp_path / f"o{i}"})
            for i in range(n)]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_line_leaves_one_summary_line_and_the_log_keeps_every_line(tmp_path):
    term, logged = FakeTerminal(), []
    run_stages(Manifest(tmp_path), _stages(tmp_path), progress=LiveLine(term, logged.append))
    lines = screen_lines(term.getvalue())
    assert len(lines) == 1 and lines[0].startswith("6 stages in ") and "6 ran, 0 done" in lines[0]
    assert "\r\x1b[K[3/6] screen_2: " in term.getvalue()  # the line was rewritten in place
    assert len(logged) == 12 and logged[0] == "[1/6] screen_0: running"
    assert logged[1].startswith("[1/6] screen_0: done in ")
    # a second run: every stage skipped, still one line
    term = FakeTerminal()
    run_stages(Manifest(tmp_path), _stages(tmp_path), progress=LiveLine(term))
    assert screen_lines(term.getvalue())[-1].endswith("0 ran, 6 done earlier")
    assert len(screen_lines(term.getvalue())) == 1


def test_a_warning_keeps_its_own_line_and_a_failure_leaves_the_failed_stage(tmp_path):
    term = FakeTerminal()
    stages = _stages(tmp_path, n=4, fail_at=2)

    def warn_then_write(fn=stages[1].fn):
        with aside():
            term.write("leaf run: warning: something to see\n")
        fn()
    stages[1].fn = warn_then_write
    with pytest.raises(RuntimeError):
        run_stages(Manifest(tmp_path), stages, progress=LiveLine(term))
    lines = screen_lines(term.getvalue())
    assert lines[0] == "leaf run: warning: something to see"
    assert lines[1].startswith("[3/4] screen_2: failed after ") and len(lines) == 2


def test_log_lines_as_a_pipe_gets_them(tmp_path):
    logged: list[str] = []
    run_stages(Manifest(tmp_path), _stages(tmp_path, n=3), progress=LogLines(logged.append))
    assert [line.split(":")[1].split(" in ")[0].strip() for line in logged] == \
        ["running", "done", "running", "done", "running", "done"]
    # the third stage (screen) is timed by the first; nothing is left after it
    assert logged[-1].endswith("about 0.0 s left")
