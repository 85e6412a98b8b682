"""The terminal's live line, known to everything that prints: a line printed while a live
progress line is shown (:class:`leaf.pipeline.progress.LiveLine`) must clear it first.

The live line registers itself here (:func:`show`, :func:`hide`); any layer prints a line of its own inside
:func:`aside` (a stage's warning, a run's note), which clears the live line and draws it again
after. Without a live line :func:`aside` does nothing.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Protocol


class Live(Protocol):
    """What :func:`aside` needs of a live line."""

    lock: threading.Lock | threading.RLock

    def clear(self) -> None: ...

    def redraw(self) -> None: ...


_shown: list[Live] = []  # the live line on the terminal now, if any


def show(live: Live) -> None:
    """``live`` is on the terminal now: :func:`aside` clears it."""
    _shown.append(live)


def hide(live: Live) -> None:
    """``live`` is gone from the terminal."""
    if live in _shown:
        _shown.remove(live)


@contextlib.contextmanager
def aside() -> Iterator[None]:
    """Around output meant to stay on its own lines (a warning): clear the live line first, draw
    it again after. Does nothing when no live line is shown."""
    live = _shown[-1] if _shown else None
    if live is None:
        yield
        return
    with live.lock:
        live.clear()
        try:
            yield
        finally:
            live.redraw()


def say(line: str, *, error: bool = False) -> None:
    """Print ``line`` on a line of its own (stderr with ``error``, else stdout), clear of the
    live line; when a quiet ``leaf run`` sends the stream to ``stages.log``, also on the
    terminal's own stream, so the user sees it."""
    stream, own = (sys.stderr, sys.__stderr__) if error else (sys.stdout, sys.__stdout__)
    with aside():
        print(line, file=stream, flush=True)
        if stream is not own and own is not None:
            print(line, file=own, flush=True)
