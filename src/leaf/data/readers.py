"""Samples from any table, read through ``datasets``, with a column mapping.

Besides leaf's own JSONL (read by :mod:`leaf.data.jsonl`, errors naming the line), a stage's
``data`` (and ``bench``, a distillation ``train_file``) may be:

- a ``.json`` file (JSON Lines or one array of objects), a ``.csv`` or a ``.parquet`` file;
- a directory written by ``datasets.Dataset.save_to_disk``;
- a Hugging Face hub dataset, ``NAME:SPLIT`` or ``NAME:CONFIG:SPLIT``
  (``openai/gsm8k:main:test``), downloaded and cached by ``datasets``.

A :class:`Table` adds a column mapping, ``{leaf field: column}``: ``instruction=question``
reads the instruction from the ``question`` column (the column is renamed in the rows, other
columns pass through). A value in quotes is a constant: ``task='math'``. A table without an
``id`` column (and none mapped) numbers its rows: ids ``"1"``, ``"2"``, ... A mapped column the
data lacks stops with one message naming it and the columns the data has. Outputs stay JSONL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.errors import LeafError

__all__ = ["FORMATS_HELP", "Table", "as_source", "is_table", "iter_table", "parse_columns",
           "with_columns"]

#: File suffixes read through ``datasets`` (and the builder that reads them).
FORMATS = {".json": "json", ".csv": "csv", ".parquet": "parquet"}
#: Every kind of input a stage's data may be, as the help texts name them.
FORMATS_HELP = ("leaf's JSONL, a .json, .csv or .parquet file, a datasets save_to_disk "
                "directory or a hub dataset NAME[:CONFIG]:SPLIT")
_HUB = re.compile(r"^[\w.-]+(/[\w.-]+)?(:[\w.-]+){1,2}$")


@dataclass
class Table:
    """A table (file, ``save_to_disk`` directory or hub ``NAME:SPLIT``) and its column mapping.

    ``found``: the columns the data has, filled in when it is read (for messages).
    """

    source: str
    columns: Mapping[str, str] = field(default_factory=dict)
    found: list[str] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return self.source

    def __fspath__(self) -> str:  # lets run digests and messages treat it like its source
        return self.source


def parse_columns(text: str | None) -> dict[str, str]:
    """``"instruction=question,task='math'"`` -> ``{"instruction": "question", "task": "'math'"}``."""
    out: dict[str, str] = {}
    if not text:
        return out
    for item in text.split(","):
        if not item.strip():
            continue
        name, eq, column = item.partition("=")
        name, column = name.strip(), column.strip()
        if not eq or not name or not column:
            raise LeafError(f"--columns {item.strip()!r}: expected FIELD=COLUMN (or FIELD='value')")
        if name in out:
            raise LeafError(f"--columns: {name!r} is mapped twice")
        out[name] = column
    return out


def _literal(column: str) -> str | None:
    if len(column) >= 2 and column[0] == column[-1] and column[0] in "'\"":
        return column[1:-1]
    return None


def is_table(source: Any) -> bool:
    """Whether ``source`` is read through ``datasets`` (not leaf's JSONL reader)."""
    if isinstance(source, Table):
        return True
    if not isinstance(source, str | os.PathLike):
        return False
    path = Path(source)
    if path.suffix.lower() in FORMATS or path.is_dir():
        return True
    return not path.exists() and bool(_HUB.match(str(source)))


def as_source(source: Any) -> Any:
    """A :class:`Table` for a path or name :func:`is_table` accepts; anything else as given."""
    if isinstance(source, Table) or not is_table(source):
        return source
    return Table(str(source))


def with_columns(source: Any, columns: Mapping[str, str] | None) -> Any:
    """``source`` with a column mapping: a :class:`Table` (a JSONL file too) when ``columns``
    is not empty, else ``source`` as given."""
    if not columns:
        return source
    if isinstance(source, Table):
        return Table(source.source, dict(columns))
    if not isinstance(source, str | os.PathLike):
        raise LeafError("a column mapping needs a file, a directory or a hub name")
    return Table(str(source), dict(columns))


def _load(source: str):
    """The rows of ``source`` as a ``datasets.Dataset`` (or a list of dicts for JSONL)."""
    try:
        import datasets  # heavy: datasets
    except ImportError as exc:
        raise LeafError(f"{source}: reading this format needs the `datasets` package ({exc})"
                        ) from None
    path = Path(source)
    suffix = path.suffix.lower()
    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                raise LeafError(f"{source}: holds several splits ({', '.join(ds)}); give the "
                                "split's directory")
            return ds
        if suffix in FORMATS or path.exists():
            if not path.is_file():
                raise LeafError(f"{source}: file not found")
            if suffix not in FORMATS:  # leaf's JSONL: read by leaf.data.jsonl.iter_records
                raise LeafError(f"{source}: a JSONL file; read it with iter_records")
            reader = {"json": datasets.Dataset.from_json, "csv": datasets.Dataset.from_csv,
                      "parquet": datasets.Dataset.from_parquet}[FORMATS[suffix]]
            return reader(str(path), keep_in_memory=True)
        if not _HUB.match(source):
            raise LeafError(f"{source}: file not found")
        name, *rest = source.split(":")
        config, split = (None, rest[0]) if len(rest) == 1 else rest
        return datasets.load_dataset(name, config, split=split)
    except LeafError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever datasets raises: one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LeafError(f"{source}: could not read it with `datasets` ({first})") from None


def _jsonable(value: Any) -> Any:
    """A value JSON can hold: containers walked, other types (dates, bytes) as text."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    return str(value)


def is_jsonl(source: str) -> bool:
    """Whether a table's source is a local file leaf reads as JSONL (not through datasets)."""
    path = Path(source)
    return path.suffix.lower() not in FORMATS and path.is_file()


def iter_table(table: Table, jsonl: list[tuple[int, dict[str, Any]]] | None = None
               ) -> Iterator[tuple[str, int | None, dict[str, Any]]]:
    """Yield ``(where, line, row)`` with the mapping applied: ``where`` names the source and
    ``line`` the JSONL or CSV line (CSV header = 1) or, elsewhere, ``where`` ends with
    ``row N`` (1-based). ``jsonl``: the ``(line, object)`` pairs of a JSONL source, read by
    the caller (:func:`leaf.data.jsonl.iter_records`)."""
    lines = None
    if jsonl is not None:
        lines = [line for line, _ in jsonl]
        rows: Any = [obj for _, obj in jsonl]
    else:
        rows = _load(table.source)
    if lines is not None:
        names = list(dict.fromkeys(k for r in rows for k in r))
    else:
        names = list(rows.column_names)
    table.found = names
    mapping = dict(table.columns)
    for name, column in mapping.items():
        if _literal(column) is None and column not in names:
            raise LeafError(f"{table.source}: column {column!r} (for {name}) not found; the data "
                            f"has columns: {', '.join(names) or '(none)'}")
    renamed: dict[str, list[str]] = {}
    for name, column in mapping.items():
        if _literal(column) is None:
            renamed.setdefault(column, []).append(name)
    is_csv = Path(table.source).suffix.lower() == ".csv"
    numbered = "id" not in mapping and "id" not in names
    for i, raw in enumerate(rows, start=1):
        row: dict[str, Any] = {}
        if numbered:
            row["id"] = str(i)
        for key, value in raw.items():
            if key in renamed:
                for name in renamed[key]:
                    row[name] = _jsonable(value)
            elif key not in mapping:
                row[key] = _jsonable(value)
        for name, column in mapping.items():
            value = _literal(column)
            if value is not None:
                row[name] = value
        if lines is not None:
            yield table.source, lines[i - 1], row
        elif is_csv:
            yield table.source, i + 1, row
        else:
            yield f"{table.source} row {i}", None, row


def missing_hint(source: Any) -> str:
    """``"; the data has columns: a, b"`` for a table already read, else ``""``."""
    if isinstance(source, Table) and source.found is not None:
        return f"; the data has columns: {', '.join(source.found) or '(none)'}"
    return ""
