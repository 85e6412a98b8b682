"""What every stage function shares: checking its options argument, resumable output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from leaf.data.jsonl import ResumableWriter
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


@contextmanager
def resumable(out: str | Path, key: Callable[[dict[str, Any]], Any],
              check: Callable[[list[dict[str, Any]]], None] | None = None
              ) -> Iterator[ResumableWriter]:
    """A :class:`ResumableWriter` on ``out`` whose earlier rows pass ``check(rows)`` first.

    When ``check`` refuses them, ``out`` and ``out.part`` are left exactly as they were (the
    writer copies a finished ``out`` to ``out.part`` to append to it; that copy is removed).
    """
    part = Path(out).with_name(Path(out).name + ".part")
    had_part = part.exists()
    with ResumableWriter(out, key=key) as writer:
        if check is not None:
            try:
                check(writer.rows)
            except Exception:
                if not had_part:
                    writer.close()
                    part.unlink(missing_ok=True)
                raise
        yield writer
