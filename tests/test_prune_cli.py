"""`leaf prune` end to end on hand-written samples and scores (no models needed)."""

from __future__ import annotations

import json
import sys
import types

import pytest

from conftest import write_jsonl
from leaf.cli import main
from leaf.evaluate.verify import Check
from test_spans import words

INSTR = "a = 3 ; b = 7 ; rumor : 15 ; query a + b ?"
RESP = "3 + 7 = 10\nanswer 10"




def diff_for(text, units, low):
    """1.0 everywhere except 0.0 on the words in ``low`` (and 0.5 on one other word)."""
    d = [0.0 if text[s:e] in low else 1.0 for s, e in units]
    d[0] = 0.5
    return d


def score_row(sid, text, low, level="instruction", segment=0, prefix_end=None):
    units = words(text)
    return {"id": sid, "level": level, "segment": segment, "field": level,
            "prefix_end": prefix_end, "units": units, "diff": diff_for(text, units, low),
            "student_nll": [float(len(text[s:e])) for s, e in units], "unit_kind": "word"}


@pytest.fixture
def files(tmp_path):
    samples = [
        {"id": "s1", "task": "math", "instruction": INSTR, "response": RESP, "answer": "10",
         "extra": {"keep": [1, 2]}},
        {"id": "s2", "task": "math", "instruction": "x = 2 ; noise ! ; query x ?",
         "response": "x = 2\nanswer 2", "answer": "2"},
        {"id": "s3", "task": "qa", "instruction": "Who?", "response": "Ann", "answer": "Ann"},
    ]
    scores = [
        score_row("s1", INSTR, {"rumor", ":", "15", "7"}),
        score_row("s1", RESP[:10], {"7"}, level="response", segment=1, prefix_end=10),
        score_row("s2", "x = 2 ; noise ! ; query x ?", {"noise", "!"}),
    ]
    return (write_jsonl(tmp_path / "samples.jsonl", samples),
            write_jsonl(tmp_path / "scores.jsonl", scores), tmp_path / "cf.jsonl")


def prune(data, scores, out, *extra):
    return main(["prune", "--data", str(data), "--scores", str(scores), "--out", str(out),
                 *map(str, extra)])


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_contract(rows, samples):
    by_id = {s["id"]: s for s in samples}
    assert [r["id"] for r in rows if r["kind"] == "original"] == list(by_id)
    for r in rows:
        src = by_id[r["origin_id"]]
        assert {k: r[k] for k in src if k not in ("id", "instruction")} == \
            {k: v for k, v in src.items() if k not in ("id", "instruction")}
        if r["kind"] == "original":
            assert r == {**src, "origin_id": src["id"], "kind": "original",
                         "level": "instruction", "pruned": [], "verified": None,
                         "input_hash": r["input_hash"]}
            continue
        text = src["instruction"] if r["level"] == "instruction" else \
            src["response"][:len(src["response"]) - len(r["target"])]
        pruned = r["instruction"] if r["level"] == "instruction" else r["prefix"]
        keep = [True] * len(text)
        for s, e in r["pruned"]:
            assert 0 <= s < e <= len(text)
            keep[s:e] = [False] * (e - s)
        assert pruned == "".join(c for c, k in zip(text, keep) if k)
        if r["level"] == "response":
            assert r["instruction"] == src["instruction"]
            assert src["response"].endswith(r["target"])


def test_span_pruning_end_to_end(files, capsys):
    data, scores, out = files
    assert prune(data, scores, out) == 0
    rows = read(out)
    samples = read(data)
    check_contract(rows, samples)
    ids = [r["id"] for r in rows]
    assert ids == ["s1", "s1#i0", "s1#i1", "s1#r1.0", "s2", "s2#i0", "s3"]
    cf = {r["id"]: r for r in rows}
    assert cf["s1#i0"]["instruction"] == "a = 3 ; b = ; rumor : 15 ; query a + b ?"
    assert cf["s1#i0"]["pruned"] == [[11, 13]]
    assert cf["s1#i1"]["instruction"] == "a = 3 ; b = 7 ; ; query a + b ?"
    assert cf["s1#i1"]["pruned"] == [[15, 26]]
    assert cf["s1#r1.0"]["prefix"] == "3 + = 10" and cf["s1#r1.0"]["target"] == "\nanswer 10"
    assert cf["s2#i0"]["instruction"] == "x = 2 ; ; query x ?"
    for r in rows:
        if r["kind"] == "counterfactual":
            assert (r["masking"], r["strategy"], r["verified"], r["threshold"]) == \
                ("gradient", "span", None, 0.1)
    assert "4 counterfactuals" in capsys.readouterr().err


def test_collective_and_thresholds(files):
    data, scores, out = files
    assert prune(data, scores, out, "--strategy", "collective") == 0
    rows = read(out)
    check_contract(rows, read(data))
    cf = {r["id"]: r for r in rows if r["kind"] == "counterfactual"}
    assert list(cf) == ["s1#i0", "s1#r1.0", "s2#i0"]
    assert cf["s1#i0"]["instruction"] == "a = 3 ; b = ; ; query a + b ?"
    assert cf["s1#i0"]["pruned"] == [[11, 13], [15, 26]]
    assert cf["s1#i0"]["strategy"] == "collective"
    # tau 0.6 also takes the first word (diff 0.5); quantile q=0 takes only the minimum (0.0)
    out2 = out.with_name("tau.jsonl")
    assert prune(data, scores, out2, "--tau", "0.6") == 0
    assert read(out2)[1]["instruction"] == "= 3 ; b = 7 ; rumor : 15 ; query a + b ?"
    out3 = out.with_name("q.jsonl")
    assert prune(data, scores, out3, "--threshold-mode", "quantile", "--quantile", "0") == 0
    assert sum(r["kind"] == "counterfactual" for r in read(out3)) == 4
    assert {r["threshold"] for r in read(out3) if r["kind"] == "counterfactual"} == {0.0}


@pytest.mark.parametrize("masking", ["random", "ppl"])
def test_baseline_masking_cli(files, masking):
    data, scores, out = files
    assert prune(data, scores, out, "--masking", masking, "--strategy", "collective",
                 "--seed", "3") == 0
    rows = read(out)
    check_contract(rows, read(data))
    cf = [r for r in rows if r["kind"] == "counterfactual"]
    assert {r["masking"] for r in cf} == {masking}
    src = {r["id"]: r for r in rows if r["kind"] == "original"}
    # as many units (words here) removed as the gradient rule flags: 4, 1 and 2
    removed_words = []
    for r in cf:
        text = src[r["origin_id"]]["instruction"] if r["level"] == "instruction" else RESP[:10]
        removed_words.append(sum(len(text[s:e].split()) for s, e in r["pruned"]))
    assert removed_words == [4, 1, 2]
    again = out.with_name("again.jsonl")
    assert prune(data, scores, again, "--masking", masking, "--strategy", "collective",
                 "--seed", "3") == 0
    assert read(again) == rows  # reproducible
    if masking == "ppl":  # nll = word length: "rumor", "query", "15", then the first "a"
        assert cf[0]["instruction"] == "= 3 ; b = 7 ; : ; a + b ?"


def test_resume_after_interrupt_and_new_samples(files, monkeypatch, capsys):
    data, scores, out = files
    fresh = out.with_name("fresh.jsonl")
    assert prune(data, scores, fresh) == 0
    import leaf.stages.confounders as cfmod  # where prune calls sample_rows

    real, calls = cfmod.sample_rows, []

    def flaky(sample, *a, **k):
        calls.append(sample["id"])
        if sample["id"] == "s2":
            raise KeyboardInterrupt
        return real(sample, *a, **k)

    monkeypatch.setattr(cfmod, "sample_rows", flaky)
    assert prune(data, scores, out) == 130
    assert not out.exists() and out.with_name("cf.jsonl.part").exists()
    assert [r["origin_id"] for r in read(out.with_name("cf.jsonl.part"))] == ["s1"] * 4
    calls.clear()
    monkeypatch.setattr(cfmod, "sample_rows", lambda s, *a, **k: calls.append(s["id"]) or
                        real(s, *a, **k))
    assert prune(data, scores, out) == 0
    assert calls == ["s2", "s3"]  # s1 was kept, not redone
    assert read(out) == read(fresh)
    # a finished output: a new sample in --data is added, nothing else recomputed
    samples = read(data) + [{"id": "s4", "task": "math", "instruction": "y ?", "response": "1",
                             "answer": "1"}]
    write_jsonl(data, samples)
    calls.clear()
    assert prune(data, scores, out) == 0
    assert calls == ["s4"] and [r["id"] for r in read(out)][-1] == "s4"
    # resuming with other options is refused rather than mixing rows
    assert prune(data, scores, out, "--masking", "random") == 2
    assert "--masking gradient" in capsys.readouterr().err
    assert out.exists() and not out.with_name("cf.jsonl.part").exists()  # left as it was


BAD_SCORES = [
    # (what the user did, row or raw line, field named in the message)
    ("diff shorter than units", lambda r: r.update(diff=r["diff"][:-1]), "diff"),
    ("unknown id", lambda r: r.update(id="nope"), "id"),
    ("unit beyond the text", lambda r: r.update(units=r["units"][:-1] + [[0, 999]]), "units"),
    ("units as strings", lambda r: r.update(units=["0-1"] * len(r["units"])), "units"),
    ("units out of order", lambda r: r.update(units=list(reversed(r["units"]))), "units"),
    ("diff with a string", lambda r: r.update(diff=["0.1"] * len(r["diff"])), "diff"),
    ("diff missing", lambda r: r.pop("diff"), "diff"),
    ("level typo", lambda r: r.update(level="instr"), "level"),
    ("response row without prefix_end", lambda r: r.update(level="response", field="response",
                                                           segment=1), "prefix_end"),
    ("segment 0 at response level", lambda r: r.update(level="response", field="response",
                                                        prefix_end=5), "segment"),
    ("field disagrees with level", lambda r: r.update(field="response"), "field"),
]


@pytest.mark.parametrize(("what", "edit", "field"), BAD_SCORES, ids=[b[0] for b in BAD_SCORES])
def test_malformed_scores_name_file_line_field(files, capsys, what, edit, field):
    data, scores, out = files
    rows = read(scores)
    edit(rows[2])
    write_jsonl(scores, rows)
    assert prune(data, scores, out) == 2
    err = capsys.readouterr().err
    assert f"scores.jsonl:3: field '{field}'" in err, err
    assert not out.exists() and not out.with_name("cf.jsonl.part").exists()


def test_malformed_files_and_flags(files, capsys):
    data, scores, out = files
    good = scores.read_text()
    scores.write_text(good + '{"id": "s3", "level": "instruction", \n')
    assert prune(data, scores, out) == 2
    assert "scores.jsonl:4: not valid JSON" in capsys.readouterr().err
    scores.write_text(good + good.splitlines()[0] + "\n")
    assert prune(data, scores, out) == 2
    assert "scores.jsonl:4: field 'segment': a second row for id 's1'" in capsys.readouterr().err
    scores.write_text(good)
    rows = read(scores)
    rows[0].pop("student_nll")
    write_jsonl(scores, rows)
    assert prune(data, scores, out) == 0  # the gradient rule does not need it
    assert prune(data, scores, out.with_name("p.jsonl"), "--masking", "ppl") == 2
    assert "scores.jsonl:1: field 'student_nll'" in capsys.readouterr().err
    assert prune(data, scores.with_name("missing.jsonl"), out) == 2
    assert "missing.jsonl: file not found" in capsys.readouterr().err
    for flags, msg in [(["--tau", "10"], "--tau must be in [0, 1]"),
                       (["--quantile", "1"], "--quantile must be in [0, 1)"),
                       (["--verify"], "--verify needs --teacher and --student"),
                       (["--teacher", "t"], "only used with --verify")]:
        assert prune(data, scores, out.with_name("x.jsonl"), *flags) == 2
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prune(data, scores, out, "--strategy", "spans")
    data.write_text('{"id": "s1", "task": "math", "instruction": "hi"}\n')
    assert prune(data, scores, out.with_name("y.jsonl")) == 2
    assert "samples.jsonl:1: field 'response'" in capsys.readouterr().err


def fake_verify_module(monkeypatch, calls):
    mod = types.ModuleType("leaf.evaluate.verify")

    def check_counterfactuals(rows, teacher, student, **kw):
        calls.append(([r["id"] for r in rows], teacher, student, kw))
        return [Check(not r["id"].endswith("#i1")) for r in rows]  # reject the second span

    mod.check_counterfactuals = check_counterfactuals
    monkeypatch.setitem(sys.modules, "leaf.evaluate.verify", mod)


def test_verify_sets_verified_and_keeps_rejected(files, monkeypatch, capsys):
    data, scores, out = files
    calls = []
    fake_verify_module(monkeypatch, calls)
    assert prune(data, scores, out, "--verify", "--teacher", "T", "--student", "S",
                 "--batch-size", "4", "--max-new-tokens", "64", "--device", "cpu",
                 "--dtype", "bfloat16", "--verify-chunk", "1", "--no-signal") == 0
    rows = read(out)
    check_contract(rows, read(data))
    got = {r["id"]: r["verified"] for r in rows}
    assert got == {"s1": None, "s1#i0": True, "s1#i1": False, "s1#r1.0": True,
                   "s2": None, "s2#i0": True, "s3": None}
    # one call per chunk of one sample; samples without counterfactuals need no models
    assert [c[0] for c in calls] == [["s1#i0", "s1#i1", "s1#r1.0"], ["s2#i0"]]
    assert calls[0][1:] == ("T", "S", {"batch_size": 4, "max_new_tokens": 64,
                                       "device": "cpu", "dtype": "bfloat16"})
    assert "4 counterfactuals, 3 verified" in capsys.readouterr().err
    # a finished --verify output cannot be resumed without --verify
    assert prune(data, scores, out) == 2
    assert "started with --verify" in capsys.readouterr().err


def test_verify_import_failure_is_a_clear_error(files, monkeypatch, capsys):
    data, scores, out = files
    monkeypatch.setitem(sys.modules, "leaf.evaluate.verify", None)  # import raises
    assert prune(data, scores, out, "--verify", "--teacher", "T", "--student", "S") == 2
    assert "--verify needs leaf.evaluate.verify" in capsys.readouterr().err


def test_verify_all_at_once(files, monkeypatch):
    data, scores, out = files
    calls = []
    fake_verify_module(monkeypatch, calls)
    assert prune(data, scores, out, "--verify", "--teacher", "T", "--student", "S",
                 "--verify-chunk", "0", "--no-signal") == 0
    assert [c[0] for c in calls] == [["s1#i0", "s1#i1", "s1#r1.0", "s2#i0"]]
    assert [r["verified"] for r in read(out)].count(False) == 1
