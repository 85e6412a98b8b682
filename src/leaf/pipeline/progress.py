"""What a run shows while its stages run, and how long it says is left.

Two displays of the same events (a stage skipped, started, finished, failed):

- :class:`LogLines`: two lines per stage run (``[i/N] name: running``, ``... done in 12 s;
  about 3 min 05 s left``) and one per stage skipped, for a log file, a pipe or CI;
- :class:`LiveLine`: one line on a terminal that rewrites itself (stage i/N, its name, the
  time spent on it and on the run, the estimate of what is left), ended by a one-line summary.
  A warning printed through :func:`leaf.terminal.aside` clears it first, so it stays on its own line.

:func:`estimate_left` is the estimate, a pure function: each remaining stage at the mean time of
the finished stages *of its own kind* (``distill``, ``eval``, ...); a kind none of whose stages
has finished yet is not guessed from the others (a 60 s distillation says nothing about a 2 s
evaluation) but counted as "not timed yet", except the kinds declared :data:`LIGHT_KINDS`.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from leaf import terminal

#: Stage kinds that copy files or compute from small tables: a second or two at most, so they
#: count as 0 s until one has been timed (instead of "not timed yet" until the very end).
LIGHT_KINDS = frozenset({"data", "detection", "trainset", "results"})


def stage_kind(name: str) -> str:
    """What a stage does, without its replicate: ``distill_kd-s0`` -> ``distill``."""
    return name.split("_", 1)[0]


def format_seconds(seconds: float) -> str:
    """``4.2 s``, ``95 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass(frozen=True)
class Estimate:
    """The time the remaining stages should take: ``seconds`` for those whose kind has been
    timed, and the count of those (``untimed``) whose kind has not."""

    seconds: float
    untimed: int = 0
    timed: int = 0  # how many remaining stages ``seconds`` covers

    def text(self) -> str:
        """``about 2 min 30 s left``, ``about 40 s left + 10 stages not timed yet``, or "" when
        what is timed is under a second and other stages are not timed (no number rather than a
        wrong one)."""
        if self.untimed and (not self.timed or self.seconds < 1):
            return ""  # the part timed says nothing (only quick stages timed so far)
        said = f"about {format_seconds(self.seconds)} left"
        if self.untimed:
            said += f" + {self.untimed} stage{'s' if self.untimed > 1 else ''} not timed yet"
        return said


def estimate_left(took: dict[str, list[float]], remaining: Sequence[str], *,
                  running: tuple[str, float] | None = None) -> Estimate:
    """The time left for the stages named ``remaining`` (not yet started), given ``took``
    (stage kind -> seconds of each finished stage of that kind) and the stage ``running`` now
    (its name and the seconds it has run: what its kind's mean leaves of it, never below 0).

    A remaining stage is counted at the mean of the finished stages of its kind; one of a
    :data:`LIGHT_KINDS` kind not timed yet at 0; any other whose kind has not been timed is
    left out of ``seconds`` and counted in ``untimed``."""
    seconds, untimed, timed = 0.0, 0, 0

    def add(kind: str, spent: float = 0.0) -> None:
        nonlocal seconds, untimed, timed
        if took.get(kind):
            seconds += max(sum(took[kind]) / len(took[kind]) - spent, 0.0)
            timed += 1
        elif kind in LIGHT_KINDS:
            timed += 1
        else:
            untimed += 1

    if running is not None:
        add(stage_kind(running[0]), running[1])
    for name in remaining:
        add(stage_kind(name))
    return Estimate(seconds, untimed, timed)


class Progress:
    """The events of a run and the tally behind the estimate; subclasses show them."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.took: dict[str, list[float]] = {}
        self.ran = self.skipped_count = 0
        self.t0 = time.monotonic()

    # -- events (called by leaf.pipeline.runner.run_stages) -------------------------------------
    def begin(self, names: Sequence[str]) -> None:
        self.names, self.t0 = list(names), time.monotonic()

    def skipped(self, i: int) -> None:
        self.skipped_count += 1

    def started(self, i: int, resuming: bool) -> None:
        pass

    def finished(self, i: int, seconds: float) -> None:
        self.ran += 1
        self.took.setdefault(stage_kind(self.names[i - 1]), []).append(seconds)

    def failed(self, i: int, seconds: float) -> None:
        pass

    def end(self) -> None:
        pass

    # -- what they add up to ---------------------------------------------------------------------
    def tag(self, i: int) -> str:
        return f"[{i}/{len(self.names)}] {self.names[i - 1]}"

    def estimate(self, i: int, running_for: float | None = None) -> Estimate:
        """After stage ``i`` (or, with ``running_for``, while it runs)."""
        running = None if running_for is None else (self.names[i - 1], running_for)
        return estimate_left(self.took, self.names[i:], running=running)

    def summary(self) -> str:
        return (f"{len(self.names)} stages in {format_seconds(time.monotonic() - self.t0)}: "
                f"{self.ran} ran, {self.skipped_count} done earlier")


class LogLines(Progress):
    """A line per event through ``log`` (``print`` by default): what a log file keeps."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        super().__init__()
        self.log = log

    def skipped(self, i: int) -> None:
        super().skipped(i)
        self.log(f"{self.tag(i)}: done earlier, skipped")

    def started(self, i: int, resuming: bool) -> None:
        self.log(f"{self.tag(i)}: {'resuming' if resuming else 'running'}")

    def finished(self, i: int, seconds: float) -> None:
        super().finished(i, seconds)
        left = self.estimate(i).text()
        self.log(f"{self.tag(i)}: done in {format_seconds(seconds)}" + (f"; {left}" if left else ""))

    def failed(self, i: int, seconds: float) -> None:
        self.log(f"{self.tag(i)}: failed after {format_seconds(seconds)}")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class LiveLine(LogLines):
    """One line on the terminal ``stream``, rewritten in place (a carriage return and an
    erase-line) at each event and every ``tick`` seconds while a stage runs; the per-event
    lines still go to ``log`` (``RUN_DIR/stages.log``). :meth:`end` leaves a summary line."""

    def __init__(self, stream: TextIO, log: Callable[[str], None] = lambda line: None,
                 tick: float = 1.0) -> None:
        super().__init__(log)
        self.stream, self.tick = stream, tick
        self.lock = threading.RLock()
        self.current: int | None = None  # the stage running now
        self.current_t0 = 0.0
        self.shown = ""
        self.stop = threading.Event()
        self.ticker: threading.Thread | None = None

    def begin(self, names: Sequence[str]) -> None:
        super().begin(names)
        terminal.show(self)
        self.stop.clear()
        self.ticker = threading.Thread(target=self._tick, name="leaf-progress", daemon=True)
        self.ticker.start()

    def skipped(self, i: int) -> None:
        super().skipped(i)
        self.draw(f"{self.tag(i)}: done earlier")

    def started(self, i: int, resuming: bool) -> None:
        super().started(i, resuming)
        with self.lock:
            self.current, self.current_t0 = i, time.monotonic()
        self.draw(self.running_text())

    def finished(self, i: int, seconds: float) -> None:
        super().finished(i, seconds)
        with self.lock:
            self.current = None
        left = self.estimate(i).text()
        self.draw(f"{self.tag(i)}: done in {format_seconds(seconds)}; run "
                  f"{format_seconds(time.monotonic() - self.t0)}" + (f"; {left}" if left else ""))

    def failed(self, i: int, seconds: float) -> None:
        super().failed(i, seconds)
        with self.lock:
            self.current = None
        self.draw(f"{self.tag(i)}: failed after {format_seconds(seconds)}", final=True)

    def end(self) -> None:
        """Stop the ticker; leave the summary (after a failure: the failed line) on its own."""
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join()
        terminal.hide(self)
        if self.shown:
            self.draw(self.summary() if self.current is None and self.ran + self.skipped_count
                      == len(self.names) else self.shown, final=True)

    def running_text(self) -> str:
        i = self.current
        if i is None:
            return self.shown
        now = time.monotonic()
        left = self.estimate(i, running_for=now - self.current_t0).text()
        return (f"{self.tag(i)}: {format_seconds(now - self.current_t0)}; run "
                f"{format_seconds(now - self.t0)}" + (f"; {left}" if left else ""))

    def draw(self, text: str, final: bool = False) -> None:
        """Rewrite the line (cut to the terminal's width, so it never wraps); ``final``: end it
        with a newline, leaving it on the screen."""
        width = shutil.get_terminal_size((100, 24)).columns - 1
        text = _ANSI.sub("", text)[:max(width, 20)]
        with self.lock:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
            self.stream.flush()
            self.shown = "" if final else text

    def clear(self) -> None:
        """Erase the line (the cursor at its start) so that other output starts clean."""
        with self.lock:
            if self.shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()

    def redraw(self) -> None:
        with self.lock:
            if self.shown:
                self.stream.write("\r\x1b[K" + self.shown)
                self.stream.flush()

    def _tick(self) -> None:
        while not self.stop.wait(self.tick):
            with self.lock:
                if self.current is not None:
                    self.draw(self.running_text())


def file_log(path: Path) -> Callable[[str], None]:
    """A ``log`` that appends each line to ``path`` (``RUN_DIR/stages.log``)."""

    def log(line: str) -> None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    return log


def tee(*logs: Callable[[str], None]) -> Callable[[str], None]:
    """A ``log`` that calls each of ``logs``."""

    def log(line: str) -> None:
        for each in logs:
            each(line)

    return log
