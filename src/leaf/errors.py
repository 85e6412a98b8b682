"""Errors that reach the user as one clear line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class LeafError(Exception):
    """A problem the user can fix (bad input, incompatible models, missing file)."""


class LeafInputError(LeafError):
    """Bad input data: names the file, the 1-based line and the offending field."""

    def __init__(
        self, path: str | Path, line: int | None, field: str | None, message: str
    ) -> None:
        self.path, self.line, self.field, self.reason = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")
