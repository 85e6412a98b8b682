"""The scores file: read and check ``scores.jsonl`` (written by ``leaf detect``, rows made by
:mod:`leaf.detect.score_samples`) against the samples it scores.

Every problem is reported as one :class:`~leaf.errors.LeafInputError` naming the file, the line
and the field, before anything is written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from leaf.data.jsonl import Records, first_seen, iter_records
from leaf.data.resumable import fingerprint
from leaf.errors import LeafInputError


def text_hash(sample: dict[str, Any]) -> str:
    """The hash of the text detection reads from a sample (instruction and response), kept in
    each scores row as ``text_hash`` so that pruning can refuse scores of another text."""
    return fingerprint(sample.get("instruction"), sample.get("response"))


def scored_text(sample: dict[str, Any], row: dict[str, Any]) -> str:
    """The text a scores row's units index: the instruction, or ``response[:prefix_end]``."""
    if row["level"] == "instruction":
        return sample["instruction"]
    return sample["response"][: row["prefix_end"]]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(values: Any, n: int, allow_inf: bool) -> str | None:
    """Why ``values`` is not a list of ``n`` numbers, or None when it is."""
    if not isinstance(values, list):
        return f"must be a list of numbers, got {type(values).__name__}"
    if len(values) != n:
        return f"has {len(values)} values but 'units' has {n}"
    for i, v in enumerate(values):
        if not isinstance(v, int | float) or isinstance(v, bool):
            return f"value {i} is {v!r}, not a number"
        if math.isnan(v) or (math.isinf(v) and not allow_inf):
            return f"value {i} is {v!r}, not a finite number"
    return None


def check_scores_row(
    row: dict[str, Any],
    samples: dict[str, dict[str, Any]],
    path: str | Path,
    line: int | None,
    *,
    need_nll: bool = False,
) -> None:
    """Raise :class:`LeafInputError` for the first field of ``row`` that is unusable."""

    def bad(field: str, message: str) -> LeafInputError:
        return LeafInputError(path, line, field, message)

    sid = row.get("id")
    if not isinstance(sid, str) or not sid:
        raise bad("id", f"must be a non-empty string, got {sid!r}")
    if sid not in samples:
        raise bad("id", f"{sid!r} is not a sample id of the --data file")
    th = row.get("text_hash")
    if th is not None and th != text_hash(samples[sid]):
        raise bad("text_hash", f"the scores of id {sid!r} were computed from another text "
                  "than the --data row has now (the data changed since `leaf detect`); run "
                  "`leaf detect` again on this data")
    level = row.get("level")
    if level not in ("instruction", "response"):
        raise bad("level", f"must be 'instruction' or 'response', got {level!r}")
    field = row.get("field", level)
    if field != level:
        raise bad("field", f"must be {level!r} for a {level}-level row, got {field!r}")
    segment = row.get("segment", 0 if level == "instruction" else None)
    if level == "instruction":
        if segment != 0:
            raise bad("segment", f"must be 0 for the instruction, got {segment!r}")
        if row.get("prefix_end") is not None:
            raise bad("prefix_end", "must be null for an instruction-level row")
    else:
        if not _is_int(segment) or segment < 1:
            raise bad("segment", f"must be an integer >= 1 for a response row, got {segment!r}")
        pe, resp = row.get("prefix_end"), samples[sid].get("response")
        if not isinstance(resp, str):
            raise bad("level", f"sample {sid!r} has no 'response' to prune")
        if not _is_int(pe) or not 0 <= pe <= len(resp):
            raise bad("prefix_end", f"must be an integer in [0, {len(resp)}] (the response "
                      f"length), got {pe!r}")
    text = scored_text(samples[sid], row)
    units = row.get("units")
    if not isinstance(units, list):
        raise bad("units", "missing or not a list of [start, end) pairs")
    prev = 0
    for i, u in enumerate(units):
        if not (isinstance(u, list) and len(u) == 2 and all(_is_int(x) for x in u)):
            raise bad("units", f"unit {i} is {u!r}, not a [start, end) pair of integers")
        s, e = u
        if not 0 <= s <= e <= len(text):
            raise bad("units", f"unit {i} {u} is outside the scored {level} text "
                      f"(length {len(text)})")
        if s < prev:
            raise bad("units", f"unit {i} {u} starts before unit {i - 1}; units must be in order")
        prev = s
    why = _numbers(row.get("diff"), len(units), allow_inf=False)
    if why:
        raise bad("diff", why)
    if need_nll:
        why = _numbers(row.get("student_nll"), len(units), allow_inf=True)
        if why:
            raise bad("student_nll", why + " (needed by --masking ppl)")


def read_scores(
    source: Records, samples: dict[str, dict[str, Any]], *, need_nll: bool = False,
    name: str = "scores",
) -> dict[str, list[dict[str, Any]]]:
    """Checked scores rows (a file, or a list of rows whose errors name ``name[i]``) grouped
    by sample id, each group sorted by (level, segment)."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, str, int], tuple] = {}
    for where, line, row in iter_records(source, name):
        check_scores_row(row, samples, where, line, need_nll=need_nll)
        row = dict(row, segment=row.get("segment", 0))
        key = (row["id"], row["level"], row["segment"])
        if key in seen:
            raise LeafInputError(where, line, "segment", f"a second row for id {key[0]!r}, "
                                 f"{key[1]} segment {key[2]} (first {first_seen(*seen[key])})")
        seen[key] = (where, line)
        by_id.setdefault(row["id"], []).append(row)
    for rows in by_id.values():
        rows.sort(key=lambda r: (r["level"] != "instruction", r["segment"]))
    return by_id
