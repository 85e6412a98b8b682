"""The row driver: how every stage writes its output rows, resumably and data-parallel.

A stage declares a :class:`RowJob`: its items in input order, the key of an item and of an
output row, what makes an item's rows (its fingerprint: the input and the settings), its
batching unit and an optional check of rows already written. It passes
:meth:`RowJob.run` a ``process(work)`` that makes the rows of the items in ``work`` and yields
them in groups (several per model load). The driver does the rest:

- rows already in ``OUT`` or ``OUT.part`` are kept and their items skipped; rows whose
  fingerprint changed are dropped and made again; ``check`` may refuse the rows already there,
  leaving ``OUT`` and ``OUT.part`` as they were;
- each yielded group is appended to ``OUT.part`` in one write, every row stamped with its
  item's fingerprint; ``OUT.part`` becomes ``OUT`` when all is done and stays behind on an
  error or Ctrl-C, for a later run to resume;
- ``process`` is not called when nothing is left to do, so no model loads;
- under a launcher (:mod:`leaf.distributed`) the items still to do are cut into units of
  ``unit`` items in input order, unit j going to rank ``j % world``, so every batch holds the
  items it holds in one process; rank k writes ``OUT.rank<k>`` (resumable on its own) and after
  a barrier rank 0 writes ``OUT``: the rows kept from before, then every rank's rows in input
  order, byte for byte what one process writes;
- it counts the items made now, already done and redone, summed over the ranks (:class:`Done`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from leaf import distributed
from leaf.data.jsonl import read_jsonl, write_jsonl_atomic
from leaf.data.resumable import (
    FINGERPRINT_FIELD,
    ResumableWriter,
    Row,
    fingerprint,
    part_path,
    read_rows,
    refuse_overwriting_inputs,
    stale_keys,
)
from leaf.errors import LeafError

__all__ = ["Done", "RowJob", "Work", "by_id", "merged", "on_one_process", "rank_path", "share",
           "units"]

T = TypeVar("T")
R = TypeVar("R")


def by_id(record: dict[str, Any]) -> Any:
    """The usual key of an item and of a row: its ``id``."""
    return record["id"]


# ---------------------------------------------------------------------------------------------
# the pure parts: units, which rank does which, the merged order


def units(items: Sequence[T], size: int) -> list[tuple[int, list[T]]]:
    """``items`` cut into units of ``size`` in order, numbered: ``[(0, first unit), ...]``."""
    size = max(int(size), 1)
    return [(j, list(items[lo:lo + size])) for j, lo in enumerate(range(0, len(items), size))]


def share(numbered: list[tuple[int, list[T]]], rank: int, world: int
          ) -> list[tuple[int, list[T]]]:
    """The units rank ``rank`` of ``world`` makes: unit j goes to rank ``j % world``."""
    return [(j, unit) for j, unit in numbered if j % world == rank]


def merged(kept: list[Row], pending: Sequence[T], item_key: Callable[[T], Any],
           row_key: Callable[[Row], Any], rank_rows: Iterable[list[Row]]) -> list[Row]:
    """The finished output: ``kept``, then each pending item's rows in input order, taken from
    the first of ``rank_rows`` that holds the item (a rank file from an earlier run with another
    world size may repeat an item)."""
    groups: dict[Any, list[Row]] = {}
    for rows in rank_rows:
        taken: set = set()
        for row in rows:
            k = row_key(row)
            if k in groups and k not in taken:
                continue
            taken.add(k)
            groups.setdefault(k, []).append(row)
    out = list(kept)
    for item in pending:
        out.extend(groups.get(item_key(item), []))
    return out


# ---------------------------------------------------------------------------------------------
# rank files


def rank_path(out: Path, rank: int) -> Path:
    """Where rank ``rank`` writes its share of ``out``."""
    return out.with_name(f"{out.name}.rank{rank}")


def _rank_files(out: Path) -> list[Path]:
    """Every ``OUT.rank<k>`` and ``OUT.rank<k>.part`` beside ``out`` (any earlier world size
    included), finished files first, each rank in order."""
    pattern = re.compile(re.escape(out.name) + r"\.rank(\d+)(\.part)?$")
    found = []
    for p in out.parent.glob(out.name + ".rank*"):
        m = pattern.match(p.name)
        if m:
            found.append((bool(m.group(2)), int(m.group(1)), p))
    return [p for _, _, p in sorted(found)]


def _merge_files(out: Path, pending: Sequence[T], item_key: Callable[[T], Any],
                 row_key: Callable[[Row], Any], kept: list[Row]) -> None:
    """Write ``out`` from ``kept`` and the rank files (see :func:`merged`), then remove them."""
    files = _rank_files(out)
    write_jsonl_atomic(out, merged(kept, pending, item_key, row_key,
                                   (read_rows(path) for path in files)))
    for path in files:
        path.unlink(missing_ok=True)
    part_path(out).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# the driver


@dataclass(frozen=True)
class Work(Generic[T]):
    """What ``process`` is given: this process's items still to do.

    ``units``: ``(j, items)`` in input order, j numbering the units of the whole job (every
    unit in a single process); ``kept``: the rows the output held before this run that stay.
    """

    units: list[tuple[int, list[T]]]
    kept: list[Row]
    here: Path  # this process's output file (OUT, or its rank file under a launcher)

    @property
    def chunks(self) -> list[list[T]]:
        """The items of each unit: what the stage batches together."""
        return [unit for _, unit in self.units]

    @property
    def items(self) -> list[T]:
        """Every item to do, in input order."""
        return [x for _, unit in self.units for x in unit]

    def side_file(self, suffix: str) -> Path:
        """A scratch file of this process beside its output (declared in
        :attr:`RowJob.side_files`, removed when the job is done)."""
        return self.here.with_name(self.here.name + suffix)


@dataclass(frozen=True)
class Done:
    """What a job did: ``made`` items now (``redone`` of them had rows made from other input)
    of ``total``, summed over the processes of a data-parallel job."""

    made: int
    redone: int
    total: int
    out: Path
    _rows: list[Row] | None  # the output's rows, known without reading it (one process)
    _summed: bool  # counts are summed over the ranks of a launcher

    @property
    def already_done(self) -> int:
        """Items whose rows were kept from an earlier run."""
        return self.total - self.made

    def rows(self) -> list[Row]:
        """Every row of the finished output."""
        return self._rows if self._rows is not None else read_jsonl(self.out)

    def sum(self, *counts: int) -> tuple[int, ...]:
        """A stage's own counts summed over the processes (call it in every one)."""
        return distributed.all_sum(*counts) if self._summed else tuple(map(int, counts))


@dataclass(frozen=True)
class RowJob(Generic[T]):
    """A stage's output, declared: see the module doc.

    ``out``: the JSONL file written. ``items``: the input, in order. ``item_key(item)`` and
    ``row_key(row)`` name the item a row belongs to (its rows are written together).
    ``fingerprint(item)``: the JSON-able parts that make its rows (input text, settings); its
    hash is stored in each row (``input_hash``) and rows whose hash differs are made again;
    None: rows are never stale. ``unit``: items always handled together, by one process.
    ``check(rows)``: refuses rows already written that this run cannot continue (raise).
    ``inputs``: the stage's input files, which ``out`` may not be (refused before anything is
    written). ``side_files``: suffixes of scratch files the stage keeps beside this process's
    output (:meth:`Work.side_file`), removed when the job is done. ``local``: the items are
    already this process's own (a job inside another job's ``process``): no sharding, no merge.
    """

    out: Path
    items: Sequence[T]
    item_key: Callable[[T], Any] = by_id
    row_key: Callable[[Row], Any] = by_id
    fingerprint: Callable[[T], Sequence[Any]] | None = None
    unit: int = 1
    check: Callable[[list[Row]], None] | None = None
    inputs: Sequence[Any] = ()
    side_files: Sequence[str] = ()
    local: bool = False

    def run(self, process: Callable[[Work[T]], Iterable[list[Row]]]) -> Done:
        """Make every item's rows that ``out`` lacks with ``process`` (see the module doc)."""
        out = Path(self.out)
        hashes = {} if self.fingerprint is None else \
            {self.item_key(x): fingerprint(*self.fingerprint(x)) for x in self.items}
        current = None if self.fingerprint is None else self._current_hash(hashes)
        ranks = distributed.ranks() if self.local else distributed.init()
        sharded = ranks.distributed and not self.local
        refuse_overwriting_inputs(out, self.inputs)
        if not sharded:
            with ResumableWriter(out, self.row_key, check=self.check,
                                 current_hash=current) as writer:
                pending = [x for x in self.items if self.item_key(x) not in writer.done]
                work = Work(units(pending, self.unit), list(writer.rows), writer.path)
                self._make(process, work, writer, hashes)
            stale = writer.stale
        else:
            kept, stale, pending = self._before(out, current)
            mine = share(units(pending, self.unit), ranks.rank, ranks.world)
            with ResumableWriter(rank_path(out, ranks.rank), self.row_key, check=self.check,
                                 current_hash=current) as writer:
                left = [(j, [x for x in unit if self.item_key(x) not in writer.done])
                        for j, unit in mine]
                work = Work([(j, unit) for j, unit in left if unit], kept, writer.path)
                self._make(process, work, writer, hashes)
            stale = stale | writer.stale
            distributed.barrier()
            distributed.close_bars()
            if ranks.main:
                _merge_files(out, pending, self.item_key, self.row_key, kept)
            distributed.barrier()
        made = len(work.items)
        redone = sum(self.item_key(x) in stale for x in work.items)
        if sharded:
            made, redone = distributed.all_sum(made, redone)
        for suffix in self.side_files:
            work.side_file(suffix).unlink(missing_ok=True)
        return Done(made, redone, len(self.items), out,
                    None if sharded else writer.rows, sharded)

    def _current_hash(self, hashes: dict[Any, str]) -> Callable[[Row], str | None]:
        """The fingerprint a row would have now (None: not among the items)."""
        def current(row: Row) -> str | None:
            try:
                return hashes.get(self.row_key(row))
            except (KeyError, TypeError):
                return None
        return current

    def _before(self, out: Path, current: Callable[[Row], str | None] | None
                ) -> tuple[list[Row], set, list[T]]:
        """Under a launcher: the rows ``out`` (or a one-process ``OUT.part``) held before this run
        that stay, the keys made stale, and the items still to do (as :class:`ResumableWriter`
        decides for one process)."""
        part = part_path(out)
        source = part if part.exists() else out
        kept = read_rows(source) if source.exists() else []
        if self.check is not None and kept:
            self.check(kept)
        try:
            stale = stale_keys(kept, self.row_key, current) if current else set()
            kept = [row for row in kept if self.row_key(row) not in stale]
            done = {self.row_key(row) for row in kept}
        except (KeyError, TypeError) as exc:
            raise LeafError(f"{source} holds rows this stage did not write (no {exc} field): "
                            "choose another output path, or delete it") from None
        return kept, stale, [x for x in self.items if self.item_key(x) not in done]

    def _make(self, process: Callable[[Work[T]], Iterable[list[Row]]], work: Work[T],
              writer: ResumableWriter, hashes: dict[Any, str]) -> None:
        """Write every group ``process`` yields, each row stamped with its fingerprint."""
        if not work.units:  # nothing left: load nothing
            return
        for rows in process(work):
            if hashes:
                rows = [{**row, FINGERPRINT_FIELD: hashes[self.row_key(row)]} for row in rows]
            writer.write(rows)


def on_one_process(make: Callable[[], R], read: Callable[[], R] | None = None) -> R | None:
    """``make()`` in one process of a data-parallel job (the only one otherwise) while the others
    wait, then ``read()`` in the others: for a file made once, such as the metrics of a finished
    output."""
    if not distributed.init().main:
        distributed.barrier()
        return read() if read is not None else None
    result = make()
    distributed.barrier()
    return result
