import json

import pytest

from leaf.data.jsonl import read_jsonl
from leaf.data.resumable import ResumableWriter
from leaf.data.schema import read_samples
from leaf.errors import LeafInputError


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_samples_keeps_unknown_keys(samples_file):
    rows = read_samples(samples_file, need_grading=True)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["source"] == "unit"


@pytest.mark.parametrize(
    "line, field, fragment",
    [
        ('{"id": "x", "task": "math", "instruction": "q", "response": "r"', None, "not valid JSON"),
        ('["not", "an", "object"]', None, "JSON object"),
        ('{"task": "math", "instruction": "q", "response": "r", "answer": "1"}', "id", "missing"),
        ('{"id": 3, "task": "math", "instruction": "q", "response": "r", "answer": "1"}', "id",
         "string"),
        ('{"id": "x", "task": "maths", "instruction": "q", "response": "r", "answer": "1"}',
         "task", "one of"),
        ('{"id": "x", "task": "math", "instruction": "", "response": "r", "answer": "1"}',
         "instruction", "non-empty"),
        ('{"id": "x", "task": "math", "instruction": "q", "answer": "1"}', "response", "missing"),
        ('{"id": "x", "task": "math", "instruction": "q", "response": "r"}', "answer", "math"),
        ('{"id": "x", "task": "code", "instruction": "q", "response": "r"}', "tests", "code"),
        ('{"id": "x", "task": "qa", "instruction": "q", "response": "r", "answer": []}', "answer",
         "qa"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, line, field, fragment):
    good = '{"id": "ok", "task": "math", "instruction": "q", "response": "r", "answer": "1"}'
    path = _write(tmp_path / "s.jsonl", [good, line])
    with pytest.raises(LeafInputError) as info:
        read_samples(path, need_grading=True)
    err = info.value
    assert err.path == str(path) and err.line == 2 and err.field == field
    assert f"{path}:2" in str(err) and fragment in str(err)


def test_duplicate_id_points_at_first(tmp_path):
    row = '{"id": "x", "task": "math", "instruction": "q", "response": "r", "answer": "1"}'
    path = _write(tmp_path / "s.jsonl", [row, "", row])
    with pytest.raises(LeafInputError, match="line 1") as info:
        read_samples(path)
    assert info.value.line == 3 and info.value.field == "id"


def test_non_utf8_and_missing_file(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(LeafInputError, match="UTF-8"):
        read_samples(path)
    with pytest.raises(LeafInputError, match="not found"):
        read_samples(tmp_path / "nope.jsonl")


def test_resumable_writer_resumes_and_drops_cut_line(tmp_path):
    out = tmp_path / "out.jsonl"
    w = ResumableWriter(out, key=lambda r: r["id"])
    w.write([{"id": "a", "k": 0}, {"id": "a", "k": 1}])
    w.write([{"id": "b"}])
    w.close()  # killed before finishing
    assert not out.exists()
    with (tmp_path / "out.jsonl.part").open("ab") as fh:
        fh.write(b'{"id": "c", "tru')  # a write cut by a kill
    w = ResumableWriter(out, key=lambda r: r["id"])
    assert w.done == {"a", "b"}
    w.write([{"id": "c"}])
    w.finish()
    assert [r["id"] for r in read_jsonl(out)] == ["a", "a", "b", "c"]
    # A finished file is kept and extended, never lost.
    with ResumableWriter(out, key=lambda r: r["id"]) as w:
        assert w.done == {"a", "b", "c"}
        w.write([{"id": "d"}])
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "a", "b", "c", "d"]
