"""The README's Python API example, run exactly as written (in a temporary directory)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from leaf.data.jsonl import read_jsonl

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The first ```python block of the README's "## Python API" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: no ```python block under '## Python API'"
    return match.group(1)


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md (Python API)", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()

    train = read_jsonl(tmp_path / "data" / "train.jsonl")
    screened = read_jsonl(tmp_path / "screened.jsonl")
    assert [r["id"] for r in screened] == [r["id"] for r in train] and len(train) == 60
    n_teacher = sum(r["teacher_correct"] for r in screened)
    n_student = sum(r["student_correct"] for r in screened)
    target = [r["id"] for r in screened if r["teacher_correct"] and not r["student_correct"]]
    assert n_teacher == 60 and n_student < 60  # the shipped teacher solves every sample
    assert printed[0] == (f"teacher correct {n_teacher}/60, student correct {n_student}/60, "
                          f"teacher right and student wrong {len(target)}; answers cut at "
                          "max_new_tokens (graded wrong): teacher 0, student 0; wrote "
                          "screened.jsonl")

    scores = read_jsonl(tmp_path / "scores.jsonl")
    assert sorted({r["id"] for r in scores}) == sorted(target)  # only the detect targets
    assert printed[1] == f"leaf detect: {len(target)} scored, 0 already done, " \
                        f"{len(target)} selected -> scores.jsonl"

    rows = read_jsonl(tmp_path / "counterfactuals.jsonl")
    originals = [r for r in rows if r["kind"] == "original"]
    cfs = [r for r in rows if r["kind"] == "counterfactual"]
    assert len(originals) == 60 and cfs and all(r["verified"] in (True, False) for r in cfs)
    verified = sum(r["verified"] for r in cfs)
    assert printed[2] == (f"leaf prune: 60 samples, {len(cfs)} counterfactuals, {verified} "
                          "verified, 0 rejected because an answer was cut at max_new_tokens -> "
                          "counterfactuals.jsonl")

    state = json.loads((tmp_path / "student-leaf" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (tmp_path / "student-leaf" / "model.safetensors").is_file()

    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics == namespace["metrics"] and metrics["task"] == "math" and metrics["n"] == 30
    assert len(read_jsonl(tmp_path / "eval" / "predictions.jsonl")) == 30
    assert len(read_jsonl(tmp_path / "eval" / "metrics.samples.jsonl")) == 30
    assert printed[-1] == f"accuracy on the anti-correlated split: {metrics['accuracy']:.2f}"
    assert not list(tmp_path.rglob("*.part"))
