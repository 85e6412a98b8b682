"""leaf.stages called from Python: rows instead of files, summaries, resume, and bad options
refused before any model loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from leaf.data.jsonl import read_jsonl
from leaf.errors import LeafError, LeafInputError
from leaf.settings import SettingError
from leaf.stages import (
    DetectOptions,
    DetectSummary,
    EvalOptions,
    GenerationOptions,
    GradingOptions,
    PruneOptions,
    PruneSummary,
    ScreenSummary,
    TeacherCacheOptions,
    VerifyOptions,
    detect,
    distill_arguments,
    evaluate,
    grade,
    prune,
    screen,
    teacher_cache,
)
from leaf.testbed.assets import resolve_model
from leaf.testbed.tasks import make_split

TEACHER = resolve_model("testbed:digit_sum/teacher")
STUDENT = resolve_model("testbed:digit_sum/student")
NOWHERE = "/nonexistent/model"  # a model that would fail to load: proves none was loaded
ANSWER = GenerationOptions(batch_size=32, max_new_tokens=24, device="cpu")


@pytest.fixture(scope="module")
def rows():
    """Ten training samples, three of whose distractors disagree with the answer."""
    return make_split("digit_sum", "train", 10, seed=3, bias=0.7)


@pytest.fixture(scope="module")
def screened(rows, tmp_path_factory):
    out = tmp_path_factory.mktemp("screen") / "screened.jsonl"
    summary = screen(TEACHER, STUDENT, rows, out, ANSWER)
    return summary, out


def test_screen_rows_and_resume(rows, screened):
    summary, out = screened
    written = read_jsonl(out)
    assert isinstance(summary, ScreenSummary) and summary.out == out and summary.n == 10
    assert [r["id"] for r in written] == [r["id"] for r in rows]
    assert summary.teacher_correct == sum(r["teacher_correct"] for r in written) == 10
    assert summary.student_correct == sum(r["student_correct"] for r in written) < 10
    assert summary.teacher_right_student_wrong == 10 - summary.student_correct
    assert str(summary) == (f"teacher correct 10/10, student correct {summary.student_correct}"
                            f"/10, teacher right and student wrong "
                            f"{summary.teacher_right_student_wrong}; answers cut at "
                            "max_new_tokens (graded wrong): teacher 0, student 0; "
                            f"wrote {out}")
    assert all(w == {**r, **{k: w[k] for k in ("teacher_response", "student_response",
                                                "teacher_correct", "student_correct",
                                                "input_hash")}}
               for r, w in zip(rows, written))
    # finished: a second call loads no model and returns the same counts
    assert screen(NOWHERE, NOWHERE, rows, out, ANSWER) == summary


def test_detect_rows_summary_and_resume(screened, tmp_path):
    summary, path = screened
    rows = read_jsonl(path)
    out = tmp_path / "scores.jsonl"
    got = detect(TEACHER, STUDENT, rows, out, DetectOptions(device="cpu"))
    target = [r["id"] for r in rows if r["teacher_correct"] and not r["student_correct"]]
    assert got == DetectSummary(scored=len(target), already_done=0, selected=len(target), out=out)
    assert str(got) == f"leaf detect: {len(target)} scored, 0 already done, " \
                       f"{len(target)} selected -> {out}"
    assert [r["id"] for r in read_jsonl(out)] == target
    # all ten, resumed into the same file: the targets are already done
    again = detect(TEACHER, STUDENT, rows, out, DetectOptions(device="cpu", score_all=True))
    assert (again.scored, again.already_done, again.selected) == (10 - len(target),
                                                                 len(target), 10)
    before = out.read_text()
    with pytest.raises(LeafError, match="another --level"):
        detect(TEACHER, STUDENT, rows, out, DetectOptions(device="cpu", level="both"))
    assert out.read_text() == before and not out.with_name("scores.jsonl.part").exists()


def test_prune_rows_with_verification(rows, tmp_path):
    words = rows[0]["instruction"].split(" ")
    units, pos = [], 0
    for w in words:
        units.append([pos, pos + len(w)])
        pos += len(w) + 1
    rumor = words.index("rumor")
    diff = [0.0 if rumor <= i <= rumor + 2 else 1.0 for i in range(len(units))]  # "rumor : 15"
    scores = [{"id": rows[0]["id"], "level": "instruction", "segment": 0, "field": "instruction",
               "prefix_end": None, "units": units, "diff": diff, "unit_kind": "word"}]
    out = tmp_path / "cf.jsonl"
    summary = prune(rows, scores, out, PruneOptions(tau=0.1),
                    VerifyOptions(teacher=TEACHER, student=STUDENT, generation=ANSWER))
    written = read_jsonl(out)
    cf = [r for r in written if r["kind"] == "counterfactual"]
    assert len(cf) == 1 and cf[0]["verified"] in (True, False)
    ok = int(cf[0]["verified"])
    assert summary == PruneSummary(samples=10, counterfactuals=1, verified=ok, already_done=0,
                                   out=out, truncated=0, signal=summary.signal,
                                   signal_note=summary.signal_note)
    # the kept counterfactual's signal is measured (or it is said why there is none)
    assert (summary.signal is not None) == bool(ok) and (summary.signal_note is None) == bool(ok)
    assert "rumor" not in cf[0]["instruction"] and cf[0]["id"] == rows[0]["id"] + "#i0"
    assert str(summary).startswith(
        f"leaf prune: 10 samples, 1 counterfactuals, {ok} verified, 0 rejected because an answer "
        f"was cut at max_new_tokens -> {out}\nleaf prune: signal: ")
    # resumed: nothing to do; without verification it is refused and the file left as it was
    assert prune(rows, scores, out, PruneOptions(tau=0.1),
                 VerifyOptions(teacher=NOWHERE, student=NOWHERE,
                               generation=ANSWER)).already_done == 10
    with pytest.raises(LeafError, match="started with --verify"):
        prune(rows, scores, out, PruneOptions(tau=0.1))
    assert read_jsonl(out) == written and not out.with_name("cf.jsonl.part").exists()
    plain = prune(rows, scores, tmp_path / "plain.jsonl")
    assert plain.verified is None and "verified" not in str(plain)


def test_evaluate_and_grade_rows(rows, tmp_path):
    metrics = evaluate(STUDENT, rows, tmp_path / "eval", EvalOptions(generation=ANSWER))
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics
    assert metrics["task"] == "math" and metrics["n"] == 10
    predictions = {r["id"]: r["response"] for r in read_jsonl(tmp_path / "eval" /
                                                                "predictions.jsonl")}
    # the same answers graded without a model, given as a mapping and as rows
    again = grade(rows, predictions, tmp_path / "m.json")
    assert again == metrics and (tmp_path / "m.samples.jsonl").is_file()
    as_rows = [{"id": k, "responses": [v]} for k, v in predictions.items()]
    assert grade(rows, as_rows, tmp_path / "m2.json", GradingOptions(k=[1])) == metrics
    with pytest.raises(LeafError, match="no prediction for 1 bench id"):
        grade(rows, as_rows[1:], tmp_path / "m3.json")
    with pytest.raises(LeafInputError, match=r"predictions\[0\]: field 'response'"):
        grade(rows, [{"id": rows[0]["id"]}], tmp_path / "m4.json")


def test_teacher_cache_rows(rows, tmp_path):
    out = teacher_cache(TEACHER, rows[:3], tmp_path / "cache",
                        TeacherCacheOptions(top_k=4, device="cpu", max_length=96))
    assert out == tmp_path / "cache"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rows"] == 3 and meta["top_k"] == 4
    assert [r["id"] for r in read_jsonl(out / "index.jsonl")] == [r["id"] for r in rows[:3]]


# --- bad input, refused before any model loads -------------------------------------------


@pytest.mark.parametrize(("make", "field"), [
    (lambda: DetectOptions(segments=1), "DetectOptions.segments"),
    (lambda: DetectOptions(level="all"), "DetectOptions.level"),
    (lambda: PruneOptions(tau=2.0), "PruneOptions.tau"),
    (lambda: PruneOptions(strategy="spans"), "PruneOptions.strategy"),
    (lambda: GenerationOptions(device="gpu"), "GenerationOptions.device"),
    (lambda: GenerationOptions(batch_size=0), "GenerationOptions.batch_size"),
    (lambda: EvalOptions(num_samples=2), "EvalOptions.num_samples"),
    (lambda: VerifyOptions(teacher="t", student="s", chunk=-1), "VerifyOptions.chunk"),
    (lambda: TeacherCacheOptions(top_k=0), "TeacherCacheOptions.top_k"),
    (lambda: GradingOptions(k=[0]), "GradingOptions.k"),
])
def test_bad_option_values_name_the_field(make, field):
    with pytest.raises(SettingError, match=rf"^{field}: "):
        make()


@pytest.mark.parametrize("call", [
    lambda rows, out: screen(NOWHERE, NOWHERE, rows, out, DetectOptions()),
    lambda rows, out: detect(NOWHERE, NOWHERE, rows, out, ANSWER),
    lambda rows, out: prune(rows, [], out, {"tau": 0.1}),
    lambda rows, out: prune(rows, [], out, None, ANSWER),
    lambda rows, out: evaluate(NOWHERE, rows, out, ANSWER),
    lambda rows, out: grade(rows, {}, out, EvalOptions()),
    lambda rows, out: teacher_cache(NOWHERE, rows, out, DetectOptions()),
])
def test_options_of_the_wrong_class_are_refused(call, rows, tmp_path):
    with pytest.raises(SettingError, match="expected [A-Za-z]+Options"):
        call(rows, tmp_path / "out")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("edit", "message"), [
    (lambda rows: rows[1].update(task="maths"), r"^data\[1\]: field 'task': must be one of"),
    (lambda rows: rows[2].pop("answer"), r"^data\[2\]: field 'answer'"),
    (lambda rows: rows[3].update(id=rows[0]["id"]),
     r"^data\[3\]: field 'id': duplicate id .* \(first at data\[0\]\)"),
    (lambda rows: rows.__setitem__(4, "not a dict"), r"^data\[4\]: expected a dict, got str"),
])
def test_bad_rows_name_the_row_index(rows, tmp_path, edit, message):
    bad = [dict(r) for r in rows]
    edit(bad)
    with pytest.raises(LeafInputError, match=message):
        screen(NOWHERE, NOWHERE, bad, tmp_path / "s.jsonl")
    with pytest.raises(LeafInputError, match=message.replace("data", "bench")):
        evaluate(NOWHERE, bad, tmp_path / "eval")
    if "answer" not in message:  # detection grades nothing
        with pytest.raises(LeafInputError, match=message):
            detect(TEACHER, STUDENT, bad, tmp_path / "d.jsonl", DetectOptions(score_all=True))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_data_must_be_a_path_or_rows(tmp_path):
    with pytest.raises(LeafError, match="data: expected a JSONL path or a list of dicts"):
        screen(NOWHERE, NOWHERE, {"id": "a"}, tmp_path / "s.jsonl")
    with pytest.raises(LeafInputError, match="^data: no samples"):
        screen(NOWHERE, NOWHERE, [], tmp_path / "s.jsonl")


def test_bad_scores_rows_name_the_row(rows, tmp_path):
    with pytest.raises(LeafInputError, match=r"^scores\[0\]: field 'id'"):
        prune(rows, [{"id": "nope", "level": "instruction"}], tmp_path / "cf.jsonl")


# --- distill_arguments -------------------------------------------------------------------


def test_distill_arguments_merges_config_and_overrides(tmp_path):
    args = distill_arguments({"output_dir": str(tmp_path), "max_steps": 5,
                              "learning_rate": "2e-3", "hybrid_lambda": 0.7},
                             ["--max_steps", "7", "--divergence=jsd"])
    assert (args.max_steps, args.learning_rate, args.hybrid_lambda, args.divergence) == \
        (7, 2e-3, 0.7, "jsd")


@pytest.mark.parametrize(("config", "overrides", "message"), [
    ({"hybrid_lamda": 0.5}, [], r"^run\.hybrid_lamda: unknown field \(did you mean "
                                r"'hybrid_lambda'\?\)"),
    ({"learning_rate": "fast"}, [], r"^run\.learning_rate: invalid float value: 'fast'"),
    ({"max_steps": [1]}, [], r"^run\.max_steps: expected int, got \[1\]"),
    ({"use_cpu": "maybe"}, [], r"^run\.use_cpu: "),
    ({"hybrid_lambda": 2}, [], r"^run\.hybrid_lambda: hybrid_lambda must be in \[0, 1\]"),
    ({"divergence": "kl"}, [], r"^run\.divergence: divergence must be one of"),
    ({"lr_scheduler_type": "cosin"}, [], r"^run\.lr_scheduler_type: cosin is not a valid"),
    ({}, ["--max_steps", "many"], r"^--max_steps: invalid int value: 'many'"),
    ({}, ["--hybrid-lambda", "3"], r"^--hybrid_lambda: hybrid_lambda must be in \[0, 1\]"),
    ({}, ["--max_stesp", "3"], r"unrecognized arguments: --max_stesp 3 \(did you mean "
                               r"'max_steps'\?\)"),
])
def test_distill_arguments_errors_name_the_key(config, overrides, message):
    with pytest.raises(SettingError, match=message):
        distill_arguments({"output_dir": "/tmp/unused", **config}, overrides, where="run")


# --- the command-line wrapper and import cost ----------------------------------------------


def test_flag_errors_name_the_flag_and_range():
    from leaf.commands._options import build

    with pytest.raises(SettingError, match=r"^--tau must be in \[0, 1\], got 2.0$"):
        build(PruneOptions, tau=2.0)
    with pytest.raises(SettingError, match=r"^--top-p must be in \(0, 1\], got 0.0$"):
        build(GenerationOptions, top_p=0.0)
    with pytest.raises(SettingError, match=r"^--verify-chunk must be at least 0, got -1$"):
        build(VerifyOptions, {"chunk": "--verify-chunk"}, teacher="t", student="s", chunk=-1)
    with pytest.raises(SettingError, match=r"^--num-samples: > 1 needs --temperature > 0"):
        build(EvalOptions, {"generation.temperature": "--temperature"}, num_samples=2)
    with pytest.raises(SettingError, match=r"^--strategy: expected one of"):
        build(PruneOptions, strategy="spans")


def test_import_stays_light():
    code = ("import sys, leaf.stages, leaf.cli; leaf.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
