"""JSONL reading with line-precise errors, and resumable atomic output.

Outputs are written to ``OUT.part`` as they are produced and renamed to ``OUT`` only when a
stage finishes, so a finished file is never half-written. A stage killed mid-way leaves the
``.part`` file behind; running the same command again keeps every complete group already in it
and skips those keys (resume). A truncated last line, from a kill in the middle of a write, is
dropped. Rows may carry an ``input_hash`` (:func:`input_hash`) of what produced them; given
the current hash of each key, a rerun redoes the keys whose hash changed
(:meth:`ResumableWriter.drop_stale`).

A UTF-8 byte-order mark at the start of a file is accepted (Windows tools write one).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from leaf.errors import LeafError, LeafInputError

#: What a stage reads records from: a JSONL file, or the rows themselves.
Records = str | os.PathLike | Sequence[dict[str, Any]]

_BOM = b"\xef\xbb\xbf"
#: Errors that mean "this file cannot be written here", reported as one line, not a traceback.
WRITE_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG,
                errno.ENOTDIR, errno.EEXIST, errno.EISDIR)


def input_hash(*parts: Any) -> str:
    """A short, stable hash of JSON-able ``parts``: what produced an output row (its input text
    and the settings that change it). Equal inputs give equal hashes across runs and machines."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


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
    from leaf.data import readers

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
    with _replacing(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def stale_keys(rows: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any],
               current_hash: Callable[[dict[str, Any]], str | None]) -> set[Any]:
    """The keys of ``rows`` made from other input: a row whose ``input_hash`` is not
    ``current_hash(row)`` (None: not among the current inputs; rows without ``input_hash``
    are kept)."""
    return {key(r) for r in rows
            if (want := current_hash(r)) is not None and r.get("input_hash", want) != want}


class ResumableWriter:
    """Append groups of rows to ``OUT.part``; rename to ``OUT`` on :meth:`finish`.

    ``key`` maps a row to the unit of work it belongs to (usually the sample id). All rows of
    one unit are written with a single ``write`` system call, so a killed process leaves either
    the whole group or a truncated last line, which is discarded on the next start.

    On start, rows already in ``OUT`` (a finished earlier run) or in ``OUT.part`` (an
    interrupted one) are kept; :attr:`done` holds their keys.
    """

    def __init__(self, path: str | Path, key: Callable[[dict[str, Any]], Any]) -> None:
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.key = key
        self.rows: list[dict[str, Any]] = []
        self.written = 0  # rows written by this run
        self._fd = -1
        source = self.part if self.part.exists() else self.path
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.part.exists():
                self.rows = self._read_part()
            elif self.path.exists():
                self.rows = read_jsonl(self.path)
            try:
                self.done: set[Any] = {self.key(r) for r in self.rows}
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

    def drop_stale(self, current_hash: Callable[[dict[str, Any]], str | None]) -> set[Any]:
        """Forget the keys whose rows were made from other input; return them.

        ``current_hash(row)`` is the :func:`input_hash` the row would have now, or None when its
        key is not among the current inputs (its rows are kept as they are). A key is stale when
        any of its rows has another ``input_hash``; its rows are removed from ``OUT.part``
        (rewritten atomically), so they are made again. Rows without ``input_hash`` (written
        by hand or by an older leaf) are kept.
        """
        stale = stale_keys(self.rows, self.key, current_hash)
        if stale:
            self.rows = [r for r in self.rows if self.key(r) not in stale]
            os.close(self._fd)
            self._fd = -1
            write_jsonl_atomic(self.part, self.rows)
            self._fd = os.open(self.part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.done = {self.key(r) for r in self.rows}
        return stale

    def _read_part(self) -> list[dict[str, Any]]:
        data = self.part.read_bytes()
        good_end = data.rfind(b"\n") + 1
        rows: list[dict[str, Any]] = []
        for lineno, raw in enumerate(data[:good_end].splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                rows.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise LeafInputError(
                    self.part, lineno, None, f"corrupt partial output ({exc.msg}); delete it to start over"
                ) from None
        if good_end != len(data):  # drop a line cut by a kill
            with self.part.open("r+b") as fh:
                fh.truncate(good_end)
        return rows

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append one unit's rows in a single write and remember its key(s)."""
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
        if exc_type is None and self._fd >= 0:
            self.finish()
        else:
            self.close()
