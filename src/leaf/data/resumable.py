"""Resumable output: ``OUT.part``, the fingerprint of what made a row, and rows made stale.

A stage's rows are appended to ``OUT.part`` as they are made and the file is renamed to ``OUT``
only when the stage finishes, so a finished file is never half-written. A stage killed mid-way
leaves ``OUT.part`` behind; running it again keeps every complete group of rows in it and skips
their keys. A truncated last line, from a kill in the middle of a write, is dropped.

Rows may carry an ``input_hash`` (:data:`FINGERPRINT_FIELD`), the :func:`fingerprint` of what
made them (the input and the settings that change them); given the fingerprint each key has
now, a rerun drops the rows made from other input, so they are made again
(:attr:`ResumableWriter.stale`).

Stages do not use this module directly: :mod:`leaf.data.rowjob` drives it for them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from leaf.data.jsonl import (
    WRITE_ERRNOS,
    dumps,
    is_path,
    read_jsonl,
    write_error,
    write_jsonl_atomic,
)
from leaf.errors import LeafError, LeafInputError

Row = dict[str, Any]
#: The row field that holds the fingerprint of what made the row.
FINGERPRINT_FIELD = "input_hash"


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of JSON-able ``parts``: what produced an output row (its input text
    and the settings that change it). Equal inputs give equal hashes across runs and machines."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def part_path(out: str | Path) -> Path:
    """Where the rows of ``out`` wait until it is finished."""
    out = Path(out)
    return out.with_name(out.name + ".part")


def read_part(path: Path) -> tuple[list[Row], int]:
    """The rows of a partial output and the byte length of its complete lines (a last line cut
    by a kill is left out); a damaged complete line is a :class:`LeafInputError`."""
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    rows: list[Row] = []
    for lineno, raw in enumerate(data[:good_end].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rows.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise LeafInputError(path, lineno, None, f"corrupt partial output ({exc.msg}); "
                                 "delete it to start over") from None
    return rows, good_end


def read_rows(path: Path) -> list[Row]:
    """A finished JSONL file, or a ``.part`` file less a last line cut by a kill."""
    return read_part(path)[0] if path.name.endswith(".part") else read_jsonl(path)


def stale_keys(rows: Iterable[Row], key: Callable[[Row], Any],
               current_hash: Callable[[Row], str | None]) -> set[Any]:
    """The keys of ``rows`` made from other input: a row whose fingerprint is not
    ``current_hash(row)`` (None: not among the current inputs; rows without a fingerprint, written
    by hand or by an older leaf, are kept)."""
    return {key(r) for r in rows
            if (want := current_hash(r)) is not None
            and r.get(FINGERPRINT_FIELD, want) != want}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_overwriting_inputs(out: str | Path, inputs: Iterable[Any]) -> None:
    """Refuse an output path that is one of a stage's input files (or their ``.part``)."""
    out = Path(out)
    for source in inputs:
        if not is_path(source):
            continue
        if _same_file(out, Path(source)) or _same_file(part_path(out), Path(source)):
            raise LeafError(f"the output {out} is also an input ({source}); writing it would "
                            "destroy the input: choose another output path")


class ResumableWriter:
    """Append groups of rows to ``OUT.part``; rename it to ``OUT`` on :meth:`finish`.

    ``key`` maps a row to the unit of work it belongs to (usually the sample id). All rows of
    one group are written with a single ``write`` system call, so a killed process leaves either
    the whole group or a truncated last line, which is discarded on the next start.

    On start the rows already in ``OUT`` (a finished earlier run) or in ``OUT.part`` (an
    interrupted one) are kept: :attr:`rows` holds them and :attr:`done` their keys. Then
    ``check(rows)`` may refuse them (a stage that cannot resume with other settings), and with
    ``current_hash`` (see :func:`stale_keys`) the keys whose rows were made from other input are
    dropped from ``OUT.part``, to be made again: :attr:`stale` holds them.

    When the start fails (``check`` refuses, a file cannot be written), or the ``with`` body
    fails before anything was written, ``OUT`` and ``OUT.part`` are left as they were (a finished
    ``OUT`` is copied to ``OUT.part`` to append to it: that copy is removed). Once rows were
    written, ``OUT.part`` stays for a later resume.
    """

    def __init__(self, path: str | Path, key: Callable[[Row], Any], *,
                 check: Callable[[list[Row]], None] | None = None,
                 current_hash: Callable[[Row], str | None] | None = None) -> None:
        self.path = Path(path)
        self.part = part_path(self.path)
        self.key = key
        self.rows: list[Row] = []
        self.done: set[Any] = set()
        self.stale: set[Any] = set()
        self.written = 0  # rows written by this run
        self._fd = -1
        self._had_part = self.part.exists()
        try:
            self._open()
            if check is not None:
                check(self.rows)
            if current_hash is not None:
                self._drop_stale(current_hash)
        except BaseException:
            self._discard()
            raise

    def _open(self) -> None:
        source = self.part if self._had_part else self.path
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._had_part:
                self.rows, good_end = read_part(self.part)
                if good_end != self.part.stat().st_size:  # drop a line cut by a kill
                    with self.part.open("r+b") as fh:
                        fh.truncate(good_end)
            elif self.path.exists():
                self.rows = read_jsonl(self.path)
            try:
                self.done = {self.key(r) for r in self.rows}
            except (KeyError, TypeError) as exc:
                raise LeafError(f"{source} holds rows this stage did not write (no {exc} "
                                "field): choose another output path, or delete it") from None
            if source == self.path and self.rows:
                write_jsonl_atomic(self.part, self.rows)
            self._fd = os.open(self.part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise write_error(self.part, exc) from None
            raise

    def _drop_stale(self, current_hash: Callable[[Row], str | None]) -> None:
        """Forget the keys whose rows were made from other input (rewriting ``OUT.part``)."""
        self.stale = stale_keys(self.rows, self.key, current_hash)
        if self.stale:
            self.rows = [r for r in self.rows if self.key(r) not in self.stale]
            self.close()
            write_jsonl_atomic(self.part, self.rows)
            self._fd = os.open(self.part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.done = {self.key(r) for r in self.rows}

    def _discard(self) -> None:
        """Close; remove ``OUT.part`` when this run made it and wrote nothing to it."""
        self.close()
        if not self._had_part and self.written == 0:
            self.part.unlink(missing_ok=True)

    def write(self, rows: list[Row]) -> None:
        """Append one group of rows in a single write and remember its key(s)."""
        if not rows:
            return
        payload = "".join(dumps(r) + "\n" for r in rows).encode("utf-8")
        view = memoryview(payload)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise write_error(self.part, exc) from None
            raise
        self.written += len(rows)
        self.rows.extend(rows)
        self.done.update(self.key(r) for r in rows)

    def finish(self) -> Path:
        """Flush, close and atomically move the output into place."""
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self.part, self.path)
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise write_error(self.path, exc) from None
            raise
        return self.path

    def close(self) -> None:
        """Close without finishing (the ``.part`` file stays for a later resume)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResumableWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
        elif self._fd >= 0:
            self.finish()
