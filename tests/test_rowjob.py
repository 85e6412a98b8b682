"""The row driver (leaf.data.rowjob) on its own, with no model: resume, stale rows, refusals,
and the data-parallel split and merge (two ranks played one after the other in this process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaf import distributed
from leaf.data.jsonl import read_jsonl
from leaf.data.rowjob import RowJob, merged, rank_path, share, units
from leaf.errors import LeafError

ITEMS = [{"id": k, "text": k * 2} for k in "abcdefg"]


def _job(out: Path, items=ITEMS, **kw) -> RowJob:
    return RowJob(out, items, fingerprint=lambda s: ("test", s["text"]), unit=2, **kw)


class Maker:
    """A ``process``: one row per item, a group per unit; records what it was given and can
    fail after a number of groups (a kill)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.given: list[list[str]] = []
        self.fail_after = fail_after

    def __call__(self, work):
        self.given.append([x["id"] for x in work.items])
        for n, chunk in enumerate(work.chunks):
            if n == self.fail_after:
                raise KeyboardInterrupt
            yield [{"id": x["id"], "upper": x["text"].upper()} for x in chunk]


def _ids(path: Path) -> list[str]:
    return [r["id"] for r in read_jsonl(path)]


def test_rows_are_stamped_and_a_finished_job_loads_nothing(tmp_path):
    out = tmp_path / "out.jsonl"
    make = Maker()
    done = _job(out).run(make)
    assert (done.made, done.already_done, done.redone) == (7, 0, 0)
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == list("abcdefg") == [r["id"] for r in done.rows()]
    assert list(rows[0]) == ["id", "upper", "input_hash"] and len(rows[0]["input_hash"]) == 16
    again = Maker()
    done = _job(out).run(again)
    assert again.given == [] and (done.made, done.already_done) == (0, 7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_killed_job_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _job(out).run(Maker(fail_after=2))
    part = tmp_path / "out.jsonl.part"
    assert not out.exists() and _ids(part) == list("abcd")  # two whole units kept
    with part.open("ab") as fh:
        fh.write(b'{"id": "e", "up')  # a write cut by the kill
    make = Maker()
    done = _job(out).run(make)
    assert make.given == [list("efg")] and (done.made, done.already_done) == (3, 4)
    fresh = tmp_path / "fresh.jsonl"
    _job(fresh).run(Maker())
    assert out.read_bytes() == fresh.read_bytes() and not part.exists()


def test_rows_made_from_other_input_are_redone_and_counted(tmp_path):
    out = tmp_path / "out.jsonl"
    _job(out).run(Maker())
    changed = [dict(x, text="zz") if x["id"] in "bf" else x for x in ITEMS]
    make = Maker()
    done = _job(out, changed).run(make)
    assert make.given == [["b", "f"]] and (done.made, done.redone, done.already_done) == (2, 2, 5)
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert rows["b"]["upper"] == "ZZ" and rows["a"]["upper"] == "AA"
    # a row without a fingerprint (written by hand) is kept as it is
    out.write_text(json.dumps({"id": "a", "upper": "hand"}) + "\n")
    make = Maker()
    assert _job(out).run(make).redone == 0 and make.given == [list("bcdefg")]
    assert read_jsonl(out)[0] == {"id": "a", "upper": "hand"}


def test_a_check_refusal_leaves_out_and_part_as_they_were(tmp_path):
    def refuse(rows):
        if rows:
            raise LeafError("other settings")

    out = tmp_path / "out.jsonl"
    _job(out).run(Maker())
    before = out.read_bytes()
    with pytest.raises(LeafError, match="other settings"):
        _job(out, check=refuse).run(Maker())
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == \
        ["out.jsonl"]
    out.rename(tmp_path / "out.jsonl.part")  # an interrupted run
    with pytest.raises(LeafError, match="other settings"):
        _job(out, check=refuse).run(Maker())
    assert (tmp_path / "out.jsonl.part").read_bytes() == before and not out.exists()


def test_a_failure_before_any_row_leaves_no_part_and_keeps_out(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _job(out).run(Maker(fail_after=0))
    assert list(tmp_path.iterdir()) == []
    _job(out).run(Maker())
    before = out.read_bytes()
    changed = [dict(x, text="zz") for x in ITEMS]
    with pytest.raises(KeyboardInterrupt):  # everything stale, then killed before a write
        _job(out, changed).run(Maker(fail_after=0))
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == \
        ["out.jsonl"]


def test_an_output_that_is_an_input_is_refused_before_writing(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in ITEMS))
    before = data.read_bytes()
    for out in (data, tmp_path / "." / "data.jsonl"):
        with pytest.raises(LeafError, match="is also an input"):
            _job(out, inputs=[data]).run(Maker())
    assert data.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]


def test_foreign_rows_are_refused_by_name(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"name": "x"}) + "\n")
    with pytest.raises(LeafError, match="holds rows this stage did not write"):
        _job(out).run(Maker())
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_side_files_and_a_local_job_inside_a_job(tmp_path):
    out = tmp_path / "out.jsonl"

    def two_passes(work, fail=False):
        first = RowJob(work.side_file(".first"), work.items, local=True,
                       fingerprint=lambda s: ("first", s["text"]))
        seen = {r["id"]: r["n"] for r in first.run(
            lambda w: [[{"id": x["id"], "n": len(x["text"])} for x in w.items]]).rows()}
        if fail:
            raise KeyboardInterrupt
        yield [{"id": x["id"], "n": seen[x["id"]]} for x in work.items]

    with pytest.raises(KeyboardInterrupt):
        _job(out, side_files=[".first"]).run(lambda w: two_passes(w, fail=True))
    side = tmp_path / "out.jsonl.first"
    assert _ids(side) == list("abcdefg") and not out.exists()  # kept for the resume
    done = _job(out, side_files=[".first"]).run(two_passes)
    assert done.made == 7 and [r["n"] for r in read_jsonl(out)] == [2] * 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


# ---------------------------------------------------------------------------------------------
# two ranks


def test_units_split_over_two_ranks_merge_to_the_one_process_order():
    pending = list("abcdefg")
    numbered = units(pending, 2)
    assert numbered == [(0, ["a", "b"]), (1, ["c", "d"]), (2, ["e", "f"]), (3, ["g"])]
    assert share(numbered, 0, 2) == [(0, ["a", "b"]), (2, ["e", "f"])]
    assert share(numbered, 1, 2) == [(1, ["c", "d"]), (3, ["g"])]

    def rows(rank):  # two rows per item, written unit by unit
        return [{"id": k, "n": i} for _, unit in share(numbered, rank, 2) for k in unit
                for i in range(2)]

    kept = [{"id": "z", "n": 0}]
    want = kept + [{"id": k, "n": i} for k in pending for i in range(2)]
    ident = lambda k: k  # noqa: E731
    assert merged(kept, pending, ident, lambda r: r["id"], [rows(1), rows(0)]) == want
    # an item a second rank file repeats is taken once, from the first file holding it
    assert merged(kept, pending, ident, lambda r: r["id"], [rows(0), rows(1), rows(0)]) == want


def _as_rank(monkeypatch, rank: int, world: int = 2) -> None:
    """Make this process rank ``rank`` of ``world``, with no-op collectives: the ranks then run
    one after the other (rank 0 last, as it merges after the barrier)."""
    r = distributed.Ranks(rank, world, rank, world)
    monkeypatch.setattr(distributed, "init", lambda: r)
    monkeypatch.setattr(distributed, "ranks", lambda: r)
    monkeypatch.setattr(distributed, "barrier", lambda: None)
    monkeypatch.setattr(distributed, "all_sum", lambda *c: tuple(c))


def test_two_ranks_write_the_bytes_of_one_process(tmp_path, monkeypatch):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    _job(one).run(Maker())
    given = {}
    for rank in (1, 0):
        _as_rank(monkeypatch, rank)
        make = Maker()
        done = _job(two).run(make)
        given[rank] = make.given
        if rank == 1:
            assert not two.exists() and _ids(rank_path(two, 1)) == list("cdg")
        assert done.made == len(given[rank][0])
    assert given == {0: [list("abef")], 1: [list("cdg")]}
    assert two.read_bytes() == one.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]
    # resumed on two ranks with two changed items: only they are made again, as one unit
    changed = [dict(x, text="zz") if x["id"] in "bg" else x for x in ITEMS]
    redone = {}
    for rank in (1, 0):
        _as_rank(monkeypatch, rank)
        make = Maker()
        done = _job(two, changed).run(make)
        redone[rank] = (make.given, done.made, done.redone)
    assert redone == {1: ([], 0, 0), 0: ([["b", "g"]], 2, 2)}
    monkeypatch.undo()
    _job(one, changed).run(Maker())
    assert two.read_bytes() == one.read_bytes()
