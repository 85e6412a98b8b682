"""What every stage function shares: checking its options argument, warning."""

from __future__ import annotations

from typing import TypeVar

from leaf import distributed
from leaf.settings import SettingError
from leaf.terminal import say

T = TypeVar("T")


def options_or_default(options: T | None, cls: type[T], name: str = "options") -> T:
    """``options``, or ``cls()`` when None; anything else is a :class:`SettingError`."""
    if options is None:
        return cls()
    if not isinstance(options, cls):
        raise SettingError(f"{name}: expected {cls.__name__} (from leaf.stages), "
                           f"got {type(options).__name__}")
    return options


def warn(stage: str, message: str) -> None:
    """One ``leaf STAGE: warning: ...`` line on stderr (by the main process only), also on the
    terminal when a quiet ``leaf run`` sends the stages' output to ``stages.log``."""
    if not distributed.ranks().main:
        return
    say(f"leaf {stage}: warning: {message}", error=True)
