"""What every stage function shares: checking its options argument."""

from __future__ import annotations

from typing import TypeVar

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
