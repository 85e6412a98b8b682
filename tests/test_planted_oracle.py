"""`leaf prune --masking planted`: the testbed oracle removes exactly each row's planted
misleading spans (cut like every other rule's spans) and needs no scores."""

from __future__ import annotations

import pytest

from leaf.cli import main
from leaf.data.jsonl import read_jsonl, write_jsonl_atomic
from leaf.detect.spans import cut, remove_spans
from leaf.stages import PruneOptions, prune
from leaf.testbed.tasks import FAMILIES, make_split


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_oracle_removes_exactly_the_planted_number(family, tmp_path):
    data = tmp_path / "train.jsonl"
    samples = make_split(family, "train", 40, seed=3, bias=0.5)
    write_jsonl_atomic(data, samples)
    out = tmp_path / "cf.jsonl"
    assert main(["prune", "--data", str(data), "--masking", "planted", "--out", str(out)]) == 0
    rows = read_jsonl(out)
    by_origin: dict[str, list[dict]] = {}
    for r in rows:
        by_origin.setdefault(r["origin_id"], []).append(r)
    with_spans = 0
    for s in samples:
        got = by_origin[s["id"]]
        assert got[0]["kind"] == "original" and got[0]["instruction"] == s["instruction"]
        misleading = (s.get("planted") or {}).get("misleading") or []
        assert len(got) - 1 == len(misleading)
        for (a, b), cf in zip(sorted(misleading), got[1:]):
            with_spans += 1
            widened = cut(s["instruction"], (a, b))
            assert cf["pruned"] == [list(widened)] and cf["masking"] == "planted"
            assert cf["instruction"] == remove_spans(s["instruction"], [widened])
            # nothing but the number and the whitespace next to it is gone
            assert not s["instruction"][widened[0]:a].strip()
            assert not s["instruction"][b:widened[1]].strip()
    assert with_spans >= 20


def test_oracle_with_scores_prunes_only_scored_samples(tmp_path):
    samples = make_split("digit_sum", "train", 6, seed=1)
    scored = samples[2]
    rows = [{"id": scored["id"], "level": "instruction", "segment": 0, "field": "instruction",
             "units": [[0, 1]], "teacher": [0.0], "student": [0.0], "diff": [0.0]}]
    summary = prune(samples, rows, tmp_path / "cf.jsonl", PruneOptions(masking="planted"))
    cfs = [r for r in read_jsonl(tmp_path / "cf.jsonl") if r["kind"] == "counterfactual"]
    assert {r["origin_id"] for r in cfs} == {scored["id"]} and summary.counterfactuals == 1


def test_oracle_needs_planted_spans_and_other_rules_need_scores(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    write_jsonl_atomic(data, [{"id": "x1", "task": "math", "instruction": "a = 1 ; query a ?",
                               "response": "1", "answer": "1"}])
    out = tmp_path / "cf.jsonl"
    assert main(["prune", "--data", str(data), "--masking", "planted", "--out", str(out)]) == 2
    assert "'x1' has no `planted` spans" in capsys.readouterr().err
    assert main(["prune", "--data", str(data), "--out", str(out)]) == 2
    assert "--scores is required" in capsys.readouterr().err
