"""Convert the public benchmark files into leaf's bench JSONL (see docs/evaluation.md).

Each converter reads one record of the dataset's published format and returns one bench row:
``id``, ``task``, ``instruction`` (what the model is asked), ``response`` (the reference
solution, or "" when the dataset has none), and what grading needs (``answer`` for math and
qa; ``tests`` and ``entry_point`` for code). A few source fields useful for analysis are kept
(``source`` names the format). Files are read locally: ``.jsonl``, ``.json`` (a list, or an
object holding one), ``.parquet``, each optionally ``.gz``-compressed.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import pickle
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from leaf.errors import LeafError, LeafInputError

MATH_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
QA_SUFFIX = ("Think step by step, then give the final answer on the last line as "
             "\"Answer: <short answer>\".")
CODE_FUNCTION = ("Complete the following Python function. Write the whole function, with its "
                 "imports, in one ```python code block.")


# -- reading --------------------------------------------------------------------------------

def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a local dataset file (jsonl, json, parquet; optionally gzip-compressed)."""
    path = Path(path)
    if not path.is_file():
        raise LeafInputError(path, None, None, "file not found")
    name = path.name.lower().removesuffix(".gz")
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq  # heavy: pyarrow

        with opener(path, "rb") as fh:
            table = pq.read_table(io.BytesIO(fh.read()))
        yield from table.to_pylist()
    elif name.endswith(".jsonl"):
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise LeafInputError(path, lineno, None, f"not valid JSON ({exc.msg})") \
                            from None
    elif name.endswith(".json"):
        with opener(path, "rt", encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise LeafInputError(path, exc.lineno, None, f"not valid JSON ({exc.msg})") \
                    from None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise LeafInputError(path, None, None, "expected a list of records")
            data = lists[0]
        yield from data
    else:
        raise LeafInputError(path, None, None, "unknown file type; use .jsonl, .json or .parquet")


def _need(rec: dict, field: str, index: int) -> Any:
    if rec.get(field) in (None, ""):
        raise LeafError(f"record {index + 1}: field {field!r} is missing (is this the right --format?)")
    return rec[field]


def _strip_dollars(text: str) -> str:
    text = text.strip()
    return text[1:-1].strip() if len(text) > 1 and text[0] == text[-1] == "$" else text


# -- math -----------------------------------------------------------------------------------

def gsm8k(rec: dict, index: int) -> dict:
    """GSM8K: ``question``, ``answer`` (worked solution ending in ``#### N``)."""
    solution = _need(rec, "answer", index)
    body, sep, final = solution.rpartition("####")
    if not sep:
        raise LeafError(f"record {index + 1}: GSM8K answer has no '#### N' line")
    final = final.strip().replace(",", "")
    body = re.sub(r"<<[^>]*>>", "", body).strip()  # calculator annotations
    return {"id": str(rec.get("id", f"gsm8k-{index}")), "task": "math",
            "instruction": f"{_need(rec, 'question', index).strip()}\n{MATH_SUFFIX}",
            "response": f"{body}\nThe answer is \\boxed{{{final}}}.", "answer": final,
            "source": "gsm8k"}


def math500(rec: dict, index: int) -> dict:
    """MATH-500: ``problem``, ``solution``, ``answer``, ``subject``, ``level``, ``unique_id``."""
    return {"id": str(rec.get("unique_id") or f"math500-{index}"), "task": "math",
            "instruction": f"{_need(rec, 'problem', index).strip()}\n{MATH_SUFFIX}",
            "response": rec.get("solution") or "", "answer": str(_need(rec, "answer", index)),
            "subject": rec.get("subject"), "level": rec.get("level"), "source": "math500"}


def olympiadbench(rec: dict, index: int) -> dict | None:
    """OlympiadBench: ``question``, ``final_answer`` (list), ``solution`` (list), ``context``,
    ``is_multiple_answer``, ``unit``. Records with images are skipped (None)."""
    if any(rec.get(f"image_{i}") for i in range(1, 6)) or "image" in str(
            rec.get("modality", "")).lower():
        return None
    finals = _need(rec, "final_answer", index)
    finals = [finals] if isinstance(finals, str) else list(finals)
    answer = ", ".join(_strip_dollars(str(a)) for a in finals)
    parts = [str(rec["context"]).strip()] if rec.get("context") else []
    parts.append(_need(rec, "question", index).strip())
    if rec.get("is_multiple_answer"):
        parts.append("The problem has several answers; give all of them, separated by commas.")
    if rec.get("unit"):
        parts.append(f"Give the answer in {rec['unit']}.")
    solution = rec.get("solution") or []
    solution = "\n\n".join(solution) if isinstance(solution, list) else str(solution)
    return {"id": str(rec.get("id", f"olympiadbench-{index}")), "task": "math",
            "instruction": "\n".join(parts) + f"\n{MATH_SUFFIX}", "response": solution,
            "answer": answer, "subfield": rec.get("subfield"), "source": "olympiadbench"}


# -- code -----------------------------------------------------------------------------------

def _fence(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def _plus_check(prompt: str, solution: str, entry_point: str, inputs: list,
                atol: float) -> str:
    """A ``check(candidate)`` program comparing the candidate with the reference solution on
    EvalPlus inputs (HumanEval+), floats within ``atol``."""
    return "\n".join([
        "import copy, json, math",
        f"_REFERENCE = {prompt + solution!r}",
        f"_INPUTS = json.loads({json.dumps(inputs)!r})",
        f"_ATOL = {float(atol)!r}",
        "",
        "def _same(got, expected):",
        "    if isinstance(expected, float) or isinstance(got, float):",
        "        try:",
        "            return math.isclose(got, expected, rel_tol=1e-6, abs_tol=max(_ATOL, 1e-6))",
        "        except TypeError:",
        "            return False",
        "    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):",
        "        return len(got) == len(expected) and all(map(_same, got, expected))",
        "    return got == expected",
        "",
        "def check(candidate):",
        "    namespace = {}",
        "    exec(_REFERENCE, namespace)",
        f"    reference = namespace[{entry_point!r}]",
        "    for args in _INPUTS:",
        "        expected = reference(*copy.deepcopy(args))",
        "        got = candidate(*copy.deepcopy(args))",
        "        assert _same(got, expected), f'wrong answer for input {args!r}'",
        "",
    ])


def humaneval(rec: dict, index: int) -> dict:
    """HumanEval: ``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``.
    HumanEval+ (EvalPlus: ``base_input``, ``plus_input``, ``atol``) gets a check program that
    compares the candidate with the canonical solution on all base and plus inputs."""
    prompt = _need(rec, "prompt", index)
    entry = _need(rec, "entry_point", index)
    solution = rec.get("canonical_solution") or ""
    inputs = list(rec.get("base_input") or []) + list(rec.get("plus_input") or [])
    if inputs and solution:
        tests = _plus_check(prompt, solution, entry, inputs, rec.get("atol") or 0.0)
    else:
        tests = _need(rec, "test", index)
    return {"id": str(rec.get("task_id", f"humaneval-{index}")), "task": "code",
            "instruction": f"{CODE_FUNCTION}\n\n{_fence(prompt)}",
            "response": _fence(prompt + solution) if solution else "",
            "tests": tests, "entry_point": entry, "prompt": prompt,
            "source": "humaneval+" if inputs else "humaneval"}


def leetcode(rec: dict, index: int) -> dict:
    """LeetCode in the human-eval layout (DeepSeek-Coder contest set: ``task_id``,
    ``prompt_sft``, ``prompt``, ``test``, ``meta``; LeetCodeDataset: ``task_id``, ``query`` or
    ``problem_description``, ``prompt``, ``test``, ``entry_point``, ``completion``)."""
    question = (rec.get("prompt_sft") or rec.get("query") or rec.get("problem_description")
                or _need(rec, "prompt", index))
    row = {"id": str(rec.get("task_id", f"leetcode-{index}")), "task": "code",
           "instruction": question.strip() + "\n\nWrite the solution in one ```python code block.",
           "response": _fence(rec["completion"]) if rec.get("completion") else "",
           "tests": _need(rec, "test", index), "source": "leetcode"}
    if rec.get("entry_point"):
        row["entry_point"] = rec["entry_point"]
    if rec.get("prompt") and rec.get("prompt") != question:
        row["prompt"] = rec["prompt"]  # code the tests expect first (imports, helper classes)
    return row


class _StringsOnly(pickle.Unpickler):
    """LiveCodeBench pickles its private tests as one string: allow nothing else."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _lcb_tests(value: Any) -> list[dict]:
    if not value:
        return []
    if isinstance(value, list):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raw = zlib.decompress(base64.b64decode(value))
        return json.loads(_StringsOnly(io.BytesIO(raw)).load())


def livecodebench(rec: dict, index: int) -> dict:
    """LiveCodeBench (code_generation_lite): ``question_id``, ``question_title``,
    ``question_content``, ``starter_code``, ``public_test_cases``, ``private_test_cases``
    (JSON, or base64 + zlib + pickle), ``metadata`` (JSON with ``func_name``), ``platform``,
    ``contest_date``, ``difficulty``. Tests become ``[{"input", "output", "testtype"}]``."""
    content = _need(rec, "question_content", index).strip()
    tests = _lcb_tests(rec.get("public_test_cases")) + _lcb_tests(rec.get("private_test_cases"))
    if not tests:
        raise LeafError(f"record {index + 1}: LiveCodeBench problem without test cases")
    meta = rec.get("metadata") or {}
    meta = json.loads(meta) if isinstance(meta, str) else meta
    starter = (rec.get("starter_code") or "").strip()
    if starter:
        how = ("Use this starter code and write the complete solution in one ```python block:\n"
               + _fence(starter))
    else:
        how = ("Read the input from standard input and write the answer to standard output. "
               "Write the complete program in one ```python block.")
    row = {"id": str(rec.get("question_id", f"livecodebench-{index}")), "task": "code",
           "instruction": f"{content}\n\n{how}", "response": "",
           "tests": [{"input": t["input"], "output": t["output"],
                      "testtype": t.get("testtype", "stdin")} for t in tests],
           "starter_code": starter, "platform": rec.get("platform"),
           "contest_date": rec.get("contest_date"), "difficulty": rec.get("difficulty"),
           "source": "livecodebench"}
    if meta.get("func_name"):
        row["entry_point"] = meta["func_name"]
    return row


# -- multi-hop QA ---------------------------------------------------------------------------

def _join(sentences: Any) -> str:
    if isinstance(sentences, str):
        return sentences.strip()
    return " ".join(str(s).strip() for s in sentences if str(s).strip())


def _paragraphs(context: Any) -> list[tuple[str, str]]:
    """``(title, text)`` from the layouts HotpotQA and 2Wiki ship in."""
    if isinstance(context, str):
        return [("", context)]
    if isinstance(context, dict):  # Hugging Face: {"title": [...], "sentences": [[...]]}
        sentences = context.get("sentences") or context.get("content") or []
        return [(t, _join(s)) for t, s in zip(context.get("title", []), sentences, strict=False)]
    out = []
    for item in context or []:  # original JSON: [[title, [sentence, ...]], ...]
        out.append((item[0], _join(item[1])))
    return out


def _qa_row(rec: dict, index: int, source: str, question: str, answers: list[str],
            paragraphs: list[tuple[str, str]], closed_book: bool) -> dict:
    answers = [a for a in dict.fromkeys(str(a).strip() for a in answers) if a]
    if not answers:
        raise LeafError(f"record {index + 1}: no answer")
    parts = []
    if paragraphs and not closed_book:
        passages = "\n\n".join(f"Passage {i + 1} ({t}): {p.strip()}" if t else
                               f"Passage {i + 1}: {p.strip()}"
                               for i, (t, p) in enumerate(paragraphs))
        parts.append(f"Answer the question using the passages below.\n\n{passages}\n")
    parts.append(f"Question: {question.strip()}\n{QA_SUFFIX}")
    rid = rec.get("_id") or rec.get("id") or f"{source}-{index}"
    return {"id": str(rid), "task": "qa", "instruction": "\n".join(parts),
            "response": f"Answer: {answers[0]}", "answer": answers,
            "type": rec.get("type"), "source": source}


def _answers(rec: dict, index: int) -> list[str]:
    if rec.get("answers"):  # LongBench
        return list(rec["answers"])
    if rec.get("golden_answers"):  # FlashRAG
        return list(rec["golden_answers"])
    return [_need(rec, "answer", index)] + list(rec.get("answer_aliases") or [])


def hotpotqa(rec: dict, index: int, closed_book: bool = False) -> dict:
    """HotpotQA (``_id``/``id``, ``question``, ``answer``, ``context``); also LongBench
    (``input``, ``context`` text, ``answers``)."""
    question = rec.get("question") or _need(rec, "input", index)
    return _qa_row(rec, index, "hotpotqa", question, _answers(rec, index),
                   _paragraphs(rec.get("context")), closed_book)


def twowiki(rec: dict, index: int, closed_book: bool = False) -> dict:
    """2WikiMultiHopQA (``_id``, ``question``, ``answer``, ``context``, ``type``); LongBench too."""
    question = rec.get("question") or _need(rec, "input", index)
    row = _qa_row(rec, index, "2wiki", question, _answers(rec, index),
                  _paragraphs(rec.get("context")), closed_book)
    return row


def musique(rec: dict, index: int, closed_book: bool = False) -> dict:
    """MuSiQue (``id``, ``question``, ``answer``, ``answer_aliases``, ``paragraphs`` of
    ``{"title", "paragraph_text"}``); LongBench too."""
    question = rec.get("question") or _need(rec, "input", index)
    if rec.get("paragraphs"):
        paragraphs = [(p.get("title", ""), p["paragraph_text"]) for p in rec["paragraphs"]]
    else:
        paragraphs = _paragraphs(rec.get("context"))
    return _qa_row(rec, index, "musique", question, _answers(rec, index), paragraphs,
                   closed_book)


CONVERTERS: dict[str, Callable[..., dict | None]] = {
    "humaneval": humaneval, "gsm8k": gsm8k, "math500": math500,
    "olympiadbench": olympiadbench, "leetcode": leetcode, "livecodebench": livecodebench,
    "hotpotqa": hotpotqa, "2wiki": twowiki, "musique": musique,
}
QA_FORMATS = ("hotpotqa", "2wiki", "musique")


def convert(fmt: str, path: str | Path, *, closed_book: bool = False,
            limit: int | None = None) -> tuple[list[dict], int]:
    """Bench rows from a local dataset file, and how many records were skipped."""
    if fmt not in CONVERTERS:
        raise LeafError(f"unknown format {fmt!r}; use one of {', '.join(CONVERTERS)}")
    fn = CONVERTERS[fmt]
    rows, skipped, seen = [], 0, set()
    for index, rec in enumerate(read_records(path)):
        if limit is not None and len(rows) >= limit:
            break
        try:
            row = fn(rec, index, closed_book) if fmt in QA_FORMATS else fn(rec, index)
        except LeafError as exc:
            raise LeafError(f"{path}: {exc}") from None
        if row is None:
            skipped += 1
            continue
        if row["id"] in seen:
            row["id"] = f"{row['id']}#{index}"
        seen.add(row["id"])
        rows.append({k: v for k, v in row.items() if v is not None})
    if not rows:
        raise LeafError(f"{path}: no {fmt} records converted")
    return rows, skipped
