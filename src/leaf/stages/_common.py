"""What every stage function shares: checking its options argument, resumable output."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from leaf.data.jsonl import ResumableWriter, is_path
from leaf.errors import LeafError
from leaf.settings import SettingError

T = TypeVar("T")


def options_or_default(options: T | None, cls: type[T], name: str = "options") -> T:
    """``options``, or ``cls()`` when None; anything else is a :class:`SettingError`."""
    if options is None:
        return cls()
    if not isinstance(options, cls):
        raise SettingError(f"{name}: expected {cls.__name__} (from leaf.stages), "
                           f"got {type(options).__name__}")
    return options


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_overwriting_inputs(out: str | Path, inputs: Iterable[Any]) -> None:
    """Refuse an output path that is one of the stage's input files (or their ``.part``)."""
    out = Path(out)
    part = out.with_name(out.name + ".part")
    for source in inputs:
        if not is_path(source):
            continue
        if _same_file(out, Path(source)) or _same_file(part, Path(source)):
            raise LeafError(f"the output {out} is also an input ({source}); writing it would "
                            "destroy the input: choose another output path")


@contextmanager
def resumable(out: str | Path, key: Callable[[dict[str, Any]], Any],
              check: Callable[[list[dict[str, Any]]], None] | None = None,
              current_hash: Callable[[dict[str, Any]], str | None] | None = None,
              inputs: Iterable[Any] = ()) -> Iterator[ResumableWriter]:
    """A :class:`ResumableWriter` on ``out`` whose earlier rows pass ``check(rows)`` first.

    ``inputs`` (paths, or rows that are not checked) must not be ``out``: that is refused
    before anything is written. With ``current_hash`` (see :meth:`ResumableWriter.drop_stale`)
    earlier rows made from other input are dropped, to be made again; ``writer.stale`` holds
    their keys (empty otherwise).

    When ``check`` refuses them, or the body fails before writing anything, ``out`` and
    ``out.part`` are left exactly as they were (the writer copies a finished ``out`` to
    ``out.part`` to append to it; that copy is removed). Once rows were written, ``out.part``
    is kept for a later resume.
    """
    refuse_overwriting_inputs(out, inputs)
    part = Path(out).with_name(Path(out).name + ".part")
    had_part = part.exists()
    try:
        opened = ResumableWriter(out, key=key)
    except BaseException:
        if not had_part:  # the copy of a finished output made to append to it
            part.unlink(missing_ok=True)
        raise
    with opened as writer:
        writer.stale = set()
        try:
            if check is not None:
                check(writer.rows)
            if current_hash is not None:
                writer.stale = writer.drop_stale(current_hash)
            yield writer
        except BaseException:
            if not had_part and writer.written == 0:
                writer.close()
                part.unlink(missing_ok=True)
            raise
