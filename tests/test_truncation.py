"""Answers cut at max_new_tokens: every generating stage (screen, verification in prune, eval)
counts them, marks the rows, warns above 2% naming the key to raise, and grades them wrong,
never by the number they stopped at. The testbed teacher writes ``a + b + c = S. The answer is
S.`` in 17 to 19 tokens, so 16 tokens cut every answer just before its end: the cut text
already holds the right number, which a grader reading the last number would accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from leaf.cli import main
from leaf.data.jsonl import read_jsonl, write_jsonl_atomic
from leaf.evaluate.grading import grade
from leaf.evaluate.math_grader import grade_math
from leaf.evaluate.metrics import aggregate, grade_all, read_predictions_and_cuts
from leaf.evaluate.truncation import WARN_SHARE, cut_warning
from leaf.pipeline import tables
from leaf.pipeline.config import load_config
from leaf.pipeline.truncation import truncation_counts
from leaf.report.collect import build_report_data
from leaf.stages import (
    EvalOptions,
    GenerationOptions,
    PruneOptions,
    VerifyOptions,
    evaluate,
    prune,
    screen,
)
from leaf.testbed.assets import resolve_model
from leaf.testbed.tasks import make_split

TEACHER = resolve_model("testbed:digit_sum/teacher")
STUDENT = resolve_model("testbed:digit_sum/student")
SHORT = GenerationOptions(batch_size=16, max_new_tokens=16, device="cpu")  # cuts every answer
ENOUGH = GenerationOptions(batch_size=16, max_new_tokens=24, device="cpu")  # the demo's budget


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(path, rows)


@pytest.fixture(scope="module")
def rows():
    return make_split("digit_sum", "train", 8, seed=3, bias=0.7)


def test_screen_counts_marks_warns_and_grades_cut_answers_wrong(rows, tmp_path, capsys):
    summary = screen(TEACHER, STUDENT, rows, tmp_path / "screened.jsonl", SHORT)
    err = capsys.readouterr().err
    written = read_jsonl(tmp_path / "screened.jsonl")
    assert summary.teacher_truncated == summary.student_truncated == 8
    assert "answers cut at max_new_tokens (graded wrong): teacher 8, student 8" in str(summary)
    assert ("leaf screen: warning: 8 of 8 (100.0%) teacher answers were cut at max_new_tokens "
            "16") in err and "raise screen.max_new_tokens in a run config (--max-new-tokens" in err
    assert all(r["teacher_truncated"] and r["student_truncated"] for r in written)
    assert summary.teacher_correct == summary.student_correct == 0
    # the cut text already ends in the right number: read by its last number it would pass
    assert all(grade_math(r["teacher_response"], r["answer"])["correct"] for r in written)
    assert not any(r["teacher_correct"] for r in written)

    # with the budget the testbed configs use, nothing is cut, no warning, no marks
    enough = screen(TEACHER, STUDENT, rows, tmp_path / "enough.jsonl", ENOUGH)
    err = capsys.readouterr().err
    assert (enough.teacher_truncated, enough.student_truncated) == (0, 0)
    assert enough.teacher_correct == 8 and "warning" not in err
    assert not any("teacher_truncated" in r or "student_truncated" in r
                   for r in read_jsonl(tmp_path / "enough.jsonl"))


def test_verification_never_keeps_a_counterfactual_whose_answer_was_cut(rows, tmp_path,
                                                                          capsys):
    planted = PruneOptions(masking="planted")  # the testbed's own spans: no scores needed
    short = prune(rows, None, tmp_path / "short.jsonl", planted,
                  VerifyOptions(teacher=TEACHER, student=STUDENT, generation=SHORT))
    err = capsys.readouterr().err
    cfs = [r for r in read_jsonl(tmp_path / "short.jsonl") if r["kind"] == "counterfactual"]
    assert cfs and short.truncated == len(cfs) and short.verified == 0
    assert all(r["truncated"] is True and r["verified"] is False for r in cfs)
    assert f"{len(cfs)} rejected because an answer was cut at max_new_tokens" in str(short)
    assert "leaf prune: warning:" in err and "raise screen.max_new_tokens" in err

    enough = prune(rows, None, tmp_path / "enough.jsonl", planted,
                   VerifyOptions(teacher=TEACHER, student=STUDENT, generation=ENOUGH))
    assert enough.truncated == 0 and enough.verified > 0
    assert "warning" not in capsys.readouterr().err


def test_eval_command_prints_the_count_and_the_warning(tmp_path, capsys):
    bench = tmp_path / "bench.jsonl"
    write_jsonl(bench, make_split("digit_sum", "test_id", 6, seed=5, bias=0.5))
    out = tmp_path / "eval"
    assert main(["eval", "--model", "testbed:digit_sum/teacher", "--bench", str(bench),
                 "--out", str(out), "--max-new-tokens", "16", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "accuracy 0.0000" in captured.out
    assert "; 6 answers cut at max_new_tokens (graded wrong)" in captured.out
    assert ("leaf eval: warning: 6 of 6 (100.0%) answers were cut at max_new_tokens 16"
            in captured.err and "raise evaluate.max_new_tokens" in captured.err)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["truncated"] == 6 and metrics["accuracy"] == 0.0
    assert all(p["truncated"] is True for p in read_jsonl(out / "predictions.jsonl"))
    graded = read_jsonl(out / "metrics.samples.jsonl")
    assert all(r["truncated"] and not r["correct"] and "max_new_tokens" in r["reason"]
               for r in graded)
    # `leaf grade` reads the marks back from the predictions and grades the same
    assert main(["grade", "--bench", str(bench), "--predictions",
                 str(out / "predictions.jsonl"), "--out", str(tmp_path / "regraded.json")]) == 0
    assert json.loads((tmp_path / "regraded.json").read_text()) == metrics
    capsys.readouterr()

    # enough tokens: the same teacher is right on every problem and nothing is cut
    metrics = evaluate(TEACHER, bench, tmp_path / "eval24", EvalOptions(generation=ENOUGH))
    assert (metrics["accuracy"], metrics["truncated"]) == (1.0, 0)
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("task, answer, extra", [
    ("math", "14", {"extracted": None}),
    ("qa", "Paris", {"extracted": None, "em": 0.0, "f1": 0.0, "subem": 0.0}),
    ("code", None, {"status": "truncated"}),
])
def test_every_grader_counts_a_cut_answer_wrong(task, answer, extra):
    sample = {"id": "x", "task": task, "answer": answer, "entry_point": "f",
              "tests": "def check(candidate):\n    assert candidate() == 1\n"}
    right = {"math": "Ben has 3 + 11 = 14", "qa": "Answer: Paris",
             "code": "def f():\n    return 1\n"}[task]
    assert grade(sample, right)["correct"] is True  # the text alone would pass
    got = grade(sample, right, truncated=True)
    assert got["correct"] is False and got["truncated"] is True and got["reason"]
    assert {k: got[k] for k in extra} == extra


def test_predictions_carry_cuts_per_response_and_metrics_count_them(tmp_path):
    bench = [{"id": "a", "task": "math", "answer": "4"}, {"id": "b", "task": "math",
                                                          "answer": "5"}]
    preds, cuts = read_predictions_and_cuts([
        {"id": "a", "responses": ["4", "4"], "truncated": [False, True]},
        {"id": "b", "response": "5"}])
    assert cuts == {"a": [False, True], "b": [False]}
    rows = grade_all(bench, preds, truncated=cuts, progress=False)
    assert rows[0]["n_correct"] == 1 and rows[0]["n_truncated"] == 1 and rows[1]["correct"]
    metrics = aggregate(rows)
    assert metrics["truncated"] == 1 and metrics["accuracy"] == 0.75
    with pytest.raises(Exception, match="truncated"):
        read_predictions_and_cuts([{"id": "a", "responses": ["4", "4"], "truncated": [True]}])


def test_the_warning_threshold():
    assert WARN_SHARE == 0.02
    assert cut_warning(2, 100, "answers", "evaluate", 24) is None  # 2%: not more than
    message = cut_warning(3, 100, "answers", "evaluate", 24)
    assert message.startswith("3 of 100 (3.0%) answers were cut at max_new_tokens 24")
    assert "raise evaluate.max_new_tokens in a run config (--max-new-tokens" in message


def _user_results(**extra) -> dict:
    """results.json of a run on a user's data: no testbed, no planted spans."""
    cell = {"mean": 0.5, "lo": 0.2, "hi": 0.8, "values": [0.5], "n": 4}
    return {"name": "mine", "quick": False, "splits": ["test"], "seeds": [0],
            "data": {"train": "train.csv", "testbed": None}, "replicates": ["data"],
            "variants": {"kd": {"sets": []}},
            "rows": [{"key": "kd", "label": "KD w/o mask", "members": ["kd-s0@data"],
                      "replicates": 1, "cells": {"test": cell}}],
            "differences": [], "detection": {}, "attention": None,
            "counts": {"data": {"train": 8, "screened": 8, "teacher_right_student_wrong": 2,
                                "scored": 2, "sets": {"instruction_span": {
                                    "samples": 2, "counterfactuals": 3, "verified": 1,
                                    "rejected": 2, "kept": 1, "kept_remove_planted": 0}}}},
            **extra}


def test_tables_and_report_on_user_data_have_no_planted_words_and_show_cuts():
    cut = {"max_new_tokens": {"screen": 24, "evaluate": 24},
           "stages": {"screen_teacher": {"cut": 8, "answers": 8},
                      "screen_student": {"cut": 0, "answers": 8},
                      "verification": {"cut": 0, "answers": 3},
                      "evaluation": {"cut": 1, "answers": 100}},
           "models": {"teacher@data": {"test": 1}}}
    results = _user_results(truncated=cut)
    text = tables.render(results)
    assert "planted" not in text
    assert "## Answers cut at max_new_tokens" in text
    assert "| screen, teacher " in text and "100.0% (raise screen.max_new_tokens)" in text
    assert "| 1.0% " in text and "raise evaluate" not in text  # 1 in 100: under the threshold
    assert "teacher@data test 1" in text
    header, rows = tables.count_rows(results)
    assert header[-1] == "kept: not rejected (all replicates)" and len(rows[0]) == len(header)
    blocks = {b["id"]: b for b in build_report_data(
        [], [{"kind": "original", "id": "x", "instruction": "q"}],
        results=results)["results"]["blocks"]}
    assert "detection" not in blocks and blocks["truncated"]["rows"][0][0] == "screen, teacher"
    assert "planted" not in json.dumps(blocks)
    # testbed runs keep their planted-span column and detection table
    testbed = _user_results(data={"testbed": "digit_sum"})
    assert tables.count_rows(testbed)[0][-1] == "kept, removing the whole planted number"
    # a results.json from before the counts: no truncation table
    assert tables.truncation_rows(_user_results()) is None


def test_results_json_counts_cut_answers_of_every_stage(tmp_path):
    for role in ("teacher", "student"):
        (tmp_path / role).mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"train": "train.jsonl", "tests": {"test": "test.jsonl"}},
        "teacher": "teacher", "student": "student", "seeds": [0],
        "counterfactuals": {"instruction_span": {"level": "instruction", "verify": True}},
        "distill": {"variants": {"kd": []}}}))
    cfg = load_config(config)
    run = tmp_path / "run"
    write_jsonl(run / "data" / "screen" / "screened.jsonl",
                [{"id": "1", "teacher_truncated": True}, {"id": "2", "student_truncated": True},
                 {"id": "3"}])
    write_jsonl(run / "data" / "prune" / "instruction_span.jsonl",
                [{"kind": "original", "verified": None},
                 {"kind": "counterfactual", "verified": False, "truncated": True},
                 {"kind": "counterfactual", "verified": True}])
    for key, cut in (("teacher", 0), ("student", 2), ("kd-s0", 1)):
        path = run / "eval" / key / "data" / "test" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"task": "math", "n": 4, "accuracy": 0.5, "truncated": cut}))
    got = truncation_counts(cfg, run)
    assert got["max_new_tokens"] == {"screen": 512, "evaluate": 512}  # one default
    assert got["stages"] == {"screen_teacher": {"cut": 1, "answers": 3},
                             "screen_student": {"cut": 1, "answers": 3},
                             "verification": {"cut": 1, "answers": 2},
                             "evaluation": {"cut": 3, "answers": 12}}
    assert got["models"] == {"student@data": {"test": 2}, "kd-s0@data": {"test": 1}}


def test_run_config_without_a_budget_uses_the_commands_default(tmp_path):
    for role in ("teacher", "student"):
        (tmp_path / role).mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"testbed": "digit_sum"}, "teacher": "teacher",
                                      "student": "student"}))
    cfg = load_config(config)
    assert cfg.screen.max_new_tokens == cfg.evaluate.max_new_tokens == \
        GenerationOptions().max_new_tokens == 512
    bundled = Path(__file__).resolve().parents[1] / "src" / "leaf" / "configs" / "testbed"
    for name in ("digit_sum", "word_problem"):  # their answers end well within 24 tokens
        assert load_config(bundled / f"{name}.yaml").screen.max_new_tokens == 24
