"""Words that fit a user's data: the help names every input format leaf reads, and a sample
without a field gets the fix that works for its kind of input (a constant task through the
column mapping, a column for any other field), on a command and in a run config."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from leaf.cli import build_parser, main
from leaf.data.readers import with_columns
from leaf.data.schema import read_samples
from leaf.errors import LeafInputError

SRC = Path(__file__).resolve().parents[1] / "src"
FORMATS = (".json", ".csv", ".parquet", "save_to_disk", "NAME[:CONFIG]:SPLIT")
CSV = "question,solution,final\nWhat is 2 + 3?,2 + 3 = 5. The answer is 5.,5\n"
MAPPED = {"instruction": "question", "response": "solution", "answer": "final"}


def _help(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "leaf.cli", *args, "--help"],
                         capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "COLUMNS": "200"})
    return " ".join(out.stdout.split())


def test_run_help_names_every_data_format():
    text = _help("run")
    train = text[text.index("data.train"):text.index("data.tests")]
    assert "JSONL" in train and all(f in train for f in FORMATS)


@pytest.mark.parametrize("command, flag", [("screen", "--data"), ("detect", "--data"),
                                           ("prune", "--data"), ("eval", "--bench"),
                                           ("grade", "--bench")])
def test_commands_help_name_every_data_format(command, flag):
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction)).choices[command]
    helps = {a.option_strings[0]: a.help for a in sub._actions if a.option_strings}
    assert "any format of --columns" in helps[flag]
    assert all(f in helps["--columns"] for f in FORMATS)


def test_a_table_without_task_is_told_to_give_it_as_a_constant(tmp_path, capsys):
    csv = tmp_path / "problems.csv"
    csv.write_text(CSV)
    with pytest.raises(LeafInputError) as info:
        read_samples(with_columns(csv, MAPPED), need_grading=True)
    message = str(info.value)
    assert message.startswith(f"{csv}:2: field 'task': missing")
    assert "--columns \"task='math'\"" in message and "data.columns: {task: \"'math'\"}" in message
    assert "the data has columns: question, solution, final" in message
    # the fix the message gives works
    fixed = read_samples(with_columns(csv, {**MAPPED, "task": "'math'"}), need_grading=True)
    assert fixed[0]["task"] == "math" and fixed[0]["answer"] == 5

    # on the command line too, before any model loads
    code = main(["screen", "--teacher", "testbed:digit_sum/teacher", "--student",
                 "testbed:digit_sum/student", "--data", str(csv), "--out",
                 str(tmp_path / "s.jsonl"), "--columns",
                 "instruction=question,response=solution,answer=final"])
    assert code == 2 and "--columns \"task='math'\"" in capsys.readouterr().err


def test_other_missing_fields_are_told_to_map_a_column(tmp_path):
    csv = tmp_path / "problems.csv"
    csv.write_text(CSV)
    with pytest.raises(LeafInputError) as info:
        read_samples(with_columns(csv, {"instruction": "question", "response": "solution",
                                        "task": "'math'"}), need_grading=True)
    message = str(info.value)
    assert "field 'answer': math samples need" in message
    assert '--columns "answer=COLUMN"' in message and "data.columns: {answer: COLUMN}" in message
    # leaf's own JSONL takes the same mapping, and its message lists the row's fields
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"id": "a", "instruction": "q", "response": "r", "answer": "1"}\n')
    with pytest.raises(LeafInputError, match="task='math'.*the row has fields: id, "
                                             "instruction, response, answer"):
        read_samples(jsonl, need_grading=True)
    assert read_samples(with_columns(jsonl, {"task": "'math'"}), need_grading=True)
    # samples given from Python need the field itself: no flag to suggest
    with pytest.raises(LeafInputError, match=r"data\[0\]: field 'task': missing: give each "
                                             r"sample a 'task' \(math, code, qa\)"):
        read_samples([{"id": "a", "instruction": "q", "response": "r"}])
