"""The sample contract shared by every stage.

A sample is one JSON object: ``id`` (unique string), ``task`` (``math`` | ``code`` | ``qa``),
``instruction``, ``response`` (gold or teacher answer), and what grading needs: ``answer``
(math; qa may give a list), ``tests`` and ``entry_point`` (code). Unknown keys pass through.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from leaf.data import readers
from leaf.data.jsonl import Records, first_seen, is_path, iter_records
from leaf.errors import LeafInputError

TASKS = ("math", "code", "qa")
KINDS = ("original", "counterfactual")
LEVELS = ("instruction", "response")


_CALLS_CHECK = re.compile(r"^check\s*\(", re.M)


def calls_check(tests: str) -> bool:
    """Whether a ``check(candidate)`` test program calls ``check`` itself at top level (then
    the sample needs no ``entry_point``)."""
    return _CALLS_CHECK.search(tests) is not None


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def check_sample(
    obj: dict[str, Any],
    path: str | Path,
    line: int | None,
    *,
    need_response: bool = True,
    need_grading: bool = False,
) -> None:
    """Raise :class:`LeafInputError` naming the first field that breaks the contract."""

    def bad(field: str, message: str) -> LeafInputError:
        return LeafInputError(path, line, field, message)

    sid = obj.get("id")
    if not isinstance(sid, str) or not sid:
        raise bad("id", "missing or not a non-empty string" if sid is None else
                  f"must be a non-empty string, got {sid!r}")
    task = obj.get("task")
    if task not in TASKS:
        raise bad("task", f"must be one of {', '.join(TASKS)}; got {task!r}")
    if not isinstance(obj.get("instruction"), str) or not obj["instruction"].strip():
        raise bad("instruction", "missing or not a non-empty string")
    if need_response and not isinstance(obj.get("response"), str):
        raise bad("response", "missing or not a string")
    if not need_grading:
        return
    if task == "math":
        ans = obj.get("answer")
        if not isinstance(ans, str | int | float) or isinstance(ans, bool) or str(ans) == "":
            raise bad("answer", "math samples need a non-empty string or number answer")
    elif task == "qa":
        ans = obj.get("answer")
        if not (isinstance(ans, str) and ans) and not _is_str_list(ans):
            raise bad("answer", "qa samples need a string or a non-empty list of strings")
    else:
        tests = obj.get("tests")
        if not isinstance(tests, str | list) or not tests:
            raise bad("tests", "code samples need 'tests': a test program or a list of tests")
        ep = obj.get("entry_point")
        if ep is not None and (not isinstance(ep, str) or not ep):
            raise bad("entry_point", "must be a non-empty string (the function under test)")
        if (ep is None and isinstance(tests, str) and tests.lstrip()[:1] not in ("[", "{")
                and not calls_check(tests)):
            raise bad("entry_point", "missing: a code sample whose 'tests' is a check(candidate) "
                      "program needs 'entry_point', the name of the function under test")


def missing_message(field: str, reason: str, source: Records, obj: dict[str, Any]) -> str:
    """``reason`` (why ``field`` is needed) and what to do about a sample that lacks it, for
    the kind of input it came from:
    a file or table can take a column mapping (``--columns`` on a command, ``data.columns``
    in a run config; a quoted value is a constant, the usual fix for ``task``), while sample
    dicts given from Python need the field itself."""

    if not (is_path(source) or readers.is_table(source)):  # dicts from Python
        if field == "task":
            return f"missing: give each sample a 'task' ({', '.join(TASKS)})"
        return f"{reason}: give each sample {field!r}"
    has = readers.missing_hint(source) or (
        f"; the row has fields: {', '.join(obj) or '(none)'}")
    if field == "task":
        return ("missing: every sample needs its task (" + ", ".join(TASKS) + "); for data of "
                "one task give it as a constant, --columns \"task='math'\" (in a run config "
                "data.columns: {task: \"'math'\"}), or map a column holding it" + has)
    return (f"{reason}; map a column to it, --columns \"{field}=COLUMN\" (in a run config "
            f"data.columns: {{{field}: COLUMN}})" + has)


def read_samples(
    source: Records, *, need_response: bool = True, need_grading: bool = False,
    name: str = "data",
) -> list[dict[str, Any]]:
    """Read and validate a samples/bench file, or a list of sample dicts (errors then name
    ``name[i]``); ids must be unique."""

    source = readers.as_source(source)
    rows: list[dict[str, Any]] = []
    seen: dict[str, tuple] = {}
    for where, line, obj in iter_records(source, name):
        try:
            check_sample(obj, where, line, need_response=need_response,
                         need_grading=need_grading)
        except LeafInputError as exc:
            if exc.field and exc.field not in obj:
                raise LeafInputError(where, line, exc.field,
                                     missing_message(exc.field, exc.reason, source, obj)
                                     ) from None
            raise
        if obj["id"] in seen:
            raise LeafInputError(
                where, line, "id",
                f"duplicate id {obj['id']!r} (first {first_seen(*seen[obj['id']])})")
        seen[obj["id"]] = (where, line)
        rows.append(obj)
    if not rows:
        raise LeafInputError(source if is_path(source) else name, None, None,
                             "no samples in file" if is_path(source) else "no samples")
    return rows


def check_training_row(obj: dict[str, Any], path: str | Path, line: int | None) -> None:
    """Check a row of a distillation file (originals and counterfactuals, ``kind`` field)."""
    check_sample(obj, path, line, need_response=obj.get("level") != "response")
    kind = obj.get("kind", "original")
    if kind not in KINDS:
        raise LeafInputError(path, line, "kind", f"must be one of {', '.join(KINDS)}; got {kind!r}")
    level = obj.get("level", "instruction")
    if level not in LEVELS:
        raise LeafInputError(
            path, line, "level", f"must be one of {', '.join(LEVELS)}; got {level!r}"
        )
    if kind == "counterfactual" and level == "response":
        for field in ("prefix", "target"):
            if not isinstance(obj.get(field), str):
                raise LeafInputError(
                    path, line, field, "response-level counterfactuals need a string here"
                )
