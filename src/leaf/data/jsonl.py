"""JSONL reading with line-precise errors, and atomic writes.

Reading: :func:`iter_jsonl` / :func:`read_jsonl` name the file and line of a bad record, and
:func:`iter_records` takes a path, a table or the rows themselves. A UTF-8 byte-order mark at
the start of a file is accepted (Windows tools write one). Writing: :func:`write_jsonl_atomic`
and :func:`write_json_atomic` replace a file whole, so it is never half-written. Output that
grows row by row and resumes after a kill is :mod:`leaf.data.resumable`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from leaf.data import readers
from leaf.errors import LeafError, LeafInputError

#: What a stage reads records from: a JSONL file, or the rows themselves.
Records = str | os.PathLike | Sequence[dict[str, Any]]

_BOM = b"\xef\xbb\xbf"
#: Errors that mean "this file cannot be written here", reported as one line, not a traceback.
WRITE_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG,
                errno.ENOTDIR, errno.EEXIST, errno.EISDIR)


def write_error(path: str | Path, exc: OSError) -> LeafError:
    """The one-line error for an OSError met writing ``path`` (read-only folder, full disk)."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        reason += " (a file stands where a folder is needed)"
    return LeafError(f"cannot write {exc.filename or path}: {reason}")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise LeafInputError(path, None, None, "file not found")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LeafInputError(path, lineno, None, f"not UTF-8 ({exc.reason})") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise LeafInputError(path, lineno, None, f"not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise LeafInputError(
                    path, lineno, None, f"expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path)]


def is_path(source: Any) -> bool:
    """Whether ``source`` names a file (rather than holding the rows)."""
    return isinstance(source, str | os.PathLike)


def iter_records(source: Records, name: str = "data"
                 ) -> Iterator[tuple[str | Path, int | None, dict[str, Any]]]:
    """Yield ``(where, line, object)`` for each record of ``source``.

    A path is read as JSONL: ``where`` is the path and ``line`` the 1-based line. A list (any
    iterable) of dicts is taken as the rows themselves: ``where`` is ``"name[i]"`` and ``line``
    None. Either way ``LeafInputError(where, line, field, message)`` names the record.
    """

    if readers.is_table(source):  # .json/.csv/.parquet, a save_to_disk dir, a hub NAME:SPLIT
        table = readers.as_source(source)  # (or JSONL with a column mapping)
        lines = list(iter_jsonl(table.source)) if readers.is_jsonl(table.source) else None
        yield from readers.iter_table(table, lines)
        return
    if is_path(source):
        for line, obj in iter_jsonl(source):
            yield source, line, obj
        return
    if isinstance(source, Mapping | bytes) or not isinstance(source, Iterable):
        raise LeafError(f"{name}: expected a JSONL path or a list of dicts, "
                        f"got {type(source).__name__}")
    for i, obj in enumerate(source):
        where = f"{name}[{i}]"
        if not isinstance(obj, dict):
            raise LeafInputError(where, None, None, f"expected a dict, got {type(obj).__name__}")
        yield where, None, obj


def first_seen(where: str | Path, line: int | None) -> str:
    """Where a record was first seen, for "duplicate" messages: ``on line 3``, ``at data[2]``."""
    return f"on line {line}" if line is not None else f"at {where}"


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_json(v) for v in obj]
    return obj


def dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; it replaces ``path`` atomically when the
    block ends. A read-only folder or a full disk becomes one :class:`LeafError` naming
    ``path``, and the temporary file is removed; ``path`` itself is never half-written."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if exc.errno in WRITE_ERRNOS:
            raise write_error(path, exc) from None
        raise


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write all rows to ``path`` through a temporary file and an atomic rename."""
    with _replacing(Path(path)) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (a NaN or infinity becomes null, :func:`finite_json`)."""
    with _replacing(Path(path)) as tmp:
        tmp.write_text(json.dumps(finite_json(obj), indent=2, ensure_ascii=False,
                                  allow_nan=False) + "\n", encoding="utf-8")
