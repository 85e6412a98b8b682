"""A stage's output written by one process or by many (data-parallel, :mod:`leaf.distributed`).

:func:`sharded` replaces :func:`leaf.stages._common.resumable` in the stage-1 functions. In a
single process it is exactly that. Under ``torchrun`` / ``accelerate launch``:

- the work still to do (the input minus what ``OUT`` or a single-process ``OUT.part`` already
  holds) is cut into *units* of ``unit`` items in input order, unit j going to rank
  ``j % world``; a unit is what the stage batches together (a generation batch, a detection
  chunk, a verification chunk), so every batch holds the same samples as in one process;
- rank k writes ``OUT.rank<k>`` through ``OUT.rank<k>.part`` (resumable on its own: kill any
  rank, run the same command, and its finished groups are kept);
- after a barrier rank 0 writes ``OUT``: the rows already there, then every rank's rows in
  input order (key by key), which is byte for byte what one process writes; the rank files are
  removed, and a second barrier lets every rank read ``OUT``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from leaf import distributed
from leaf.data.jsonl import ResumableWriter, read_jsonl, stale_keys, write_jsonl_atomic
from leaf.errors import LeafInputError
from leaf.stages._common import refuse_overwriting_inputs, resumable

Row = dict[str, Any]


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


def _read_rows(path: Path) -> list[Row]:
    """A finished JSONL file, or a ``.part`` file less a last line cut by a kill."""
    if not path.name.endswith(".part"):
        return read_jsonl(path)
    data = path.read_bytes()
    rows = []
    for lineno, raw in enumerate(data[:data.rfind(b"\n") + 1].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rows.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise LeafInputError(path, lineno, None, f"corrupt partial output ({exc.msg}); "
                                 "delete it to start over") from None
    return rows


class Shard:
    """What a stage writes through (``writer``) and the items this process works on.

    ``items``: this process's share in input order (all of them in a single process), not yet
    filtered by ``writer.done``. ``units``: the same as ``(j, items of unit j)``, j numbering the
    units of the whole job. ``base``: rows the output held before this run (a finished ``OUT``
    or an interrupted single-process ``OUT.part``), which no rank redoes. ``stale``: the keys
    whose earlier rows were made from other input and are made again (see :func:`resumable`).
    """

    def __init__(self, writer: ResumableWriter, units: list[tuple[int, list]],
                 base: list[Row], ranks: distributed.Ranks, out: Path,
                 stale: set | None = None) -> None:
        self.writer = writer
        self.stale = set(stale or ()) | set(getattr(writer, "stale", ()))
        self.units = units
        self.items = [x for _, unit in units for x in unit]
        self.base = base
        self.ranks = ranks
        self.out = out

    def sum(self, *counts: int) -> tuple[int, ...]:
        """Counts summed over the ranks (call on every rank, after the ``with`` block)."""
        return distributed.all_sum(*counts)

    def rows(self) -> list[Row]:
        """Every row of the finished output (after the ``with`` block)."""
        return self.writer.rows if not self.ranks.distributed else read_jsonl(self.out)


def _units(items: list, unit: int) -> list[tuple[int, list]]:
    return [(j, items[lo:lo + unit]) for j, lo in enumerate(range(0, len(items), unit))]


@contextmanager
def sharded(out: str | Path, items: list, unit: int, key: Callable[[Row], Any],
            item_key: Callable[[Any], Any] = lambda s: s["id"],
            check: Callable[[list[Row]], None] | None = None,
            current_hash: Callable[[Row], str | None] | None = None,
            inputs: Iterable[Any] = ()) -> Iterator[Shard]:
    """Write ``out`` from this process's share of ``items`` (see the module doc).

    ``key(row)`` names the item a row belongs to and ``item_key(item)`` an item the same way;
    ``unit`` items are always handled by one rank together. ``check(rows)`` vets rows already
    written before any work starts, ``current_hash`` marks earlier rows made from other input
    to be made again, and ``inputs`` may not be ``out`` (as in :func:`resumable`).
    """
    out = Path(out)
    r = distributed.init()
    unit = max(int(unit), 1)
    if not r.distributed:
        with resumable(out, key=key, check=check, current_hash=current_hash,
                       inputs=inputs) as writer:
            base = list(writer.rows)
            pending = [x for x in items if item_key(x) not in writer.done]
            yield Shard(writer, _units(pending, unit), base, r, out)
        return

    refuse_overwriting_inputs(out, inputs)
    part = out.with_name(out.name + ".part")
    base = _read_rows(part) if part.exists() else read_jsonl(out) if out.exists() else []
    if check is not None and base:
        check(base)
    stale: set = set()
    if current_hash is not None:  # as ResumableWriter.drop_stale, on the rows before this run
        stale = stale_keys(base, key, current_hash)
        base = [row for row in base if key(row) not in stale]
    done = {key(row) for row in base}
    pending = [x for x in items if item_key(x) not in done]
    mine = [(j, u) for j, u in _units(pending, unit) if j % r.world == r.rank]
    with resumable(rank_path(out, r.rank), key=key, check=check,
                   current_hash=current_hash) as writer:
        yield Shard(writer, mine, base, r, out, stale)
    distributed.barrier()
    distributed.close_bars()
    if r.main:
        _merge(out, pending, key, item_key, base)
    distributed.barrier()


def _merge(out: Path, pending: list, key: Callable[[Row], Any],
           item_key: Callable[[Any], Any], base: list[Row]) -> None:
    """``base`` then every rank's rows, item by item in input order, into ``out``."""
    groups: dict[Any, list[Row]] = {}
    files = _rank_files(out)
    for path in files:
        taken: set = set()
        for row in _read_rows(path):
            k = key(row)
            if k in groups and k not in taken:  # another rank file already had this item
                continue
            taken.add(k)
            groups.setdefault(k, []).append(row)
    rows = list(base)
    for x in pending:
        rows.extend(groups.get(item_key(x), []))
    write_jsonl_atomic(out, rows)
    for path in files:
        path.unlink(missing_ok=True)
    out.with_name(out.name + ".part").unlink(missing_ok=True)
