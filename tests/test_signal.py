"""The counterfactual signal: KL(teacher || student) on the response tokens distillation trains
on, checked against the obvious computation, and printed by `leaf prune --verify`."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from conftest import write_jsonl
from leaf.cli import main
from leaf.distill.data import encode_row
from leaf.distill.signal import LOW_SIGNAL_LINE, SignalFigures, response_kl, summarise
from leaf.evaluate.verify import Check
from leaf.models import load_model, load_tokenizer

ROWS = [
    {"id": "a", "task": "math", "instruction": "a = 3 ; b = 4 ; query a + b ?",
     "response": "3 + 4 = 7\nanswer 7", "answer": "7", "kind": "original"},
    {"id": "a#i0", "origin_id": "a", "task": "math", "instruction": "a = 3 ; query a + 4 ?",
     "response": "3 + 4 = 7\nanswer 7", "answer": "7", "kind": "counterfactual",
     "level": "instruction", "verified": True},
    {"id": "a#r1.0", "origin_id": "a", "task": "math", "instruction": "a = 3 ; b = 4 ; query a + b ?",
     "response": "3 + 4 = 7\nanswer 7", "answer": "7", "kind": "counterfactual",
     "level": "response", "prefix": "3 + = 7\n", "target": "answer 7", "verified": True},
]


def obvious_kl(teacher, student, tok, row):
    """Full softmax, F.kl_div, one row at a time, positions whose next token is a label."""
    ids, labels = encode_row(tok, row)
    x = torch.tensor([ids])
    with torch.no_grad():
        log_s = F.log_softmax(student(input_ids=x).logits[0].float(), -1)
        log_t = F.log_softmax(teacher(input_ids=x).logits[0].float(), -1)
    keep = [i for i in range(len(ids) - 1) if labels[i + 1] != -100]
    kl = F.kl_div(log_s[keep], log_t[keep], log_target=True, reduction="sum")
    return float(kl), len(keep)


def test_response_kl_matches_the_obvious_computation(tiny_llama_dir, tiny_llama_big_dir):
    tok = load_tokenizer(tiny_llama_dir, padding_side=None)
    student = load_model(tiny_llama_dir, device="cpu")
    teacher = load_model(tiny_llama_big_dir, device="cpu")
    got = response_kl(teacher, student, tok, ROWS, batch_size=2, chunk_size=5)
    assert set(got) == {"a", "a#i0", "a#r1.0"}
    for row in ROWS:
        want, n = obvious_kl(teacher, student, tok, row)
        assert got[row["id"]][1] == n
        assert got[row["id"]][0] == pytest.approx(want, rel=1e-4, abs=1e-5)
    # the response-level row is scored on its target only, fewer tokens than the original
    assert got["a#r1.0"][1] < got["a"][1]
    # the same model on both sides: no divergence
    same = response_kl(student, student, tok, ROWS)
    assert all(abs(v) < 1e-5 for v, _ in same.values())


def test_summarise_means_ratio_and_warning():
    kl = {"o1": (4.0, 10), "o2": (2.0, 10), "c1": (0.5, 5), "c2": (0.5, 5), "c3": (0.5, 10)}
    f = summarise(kl, ["c1", "c2", "c3"], ["o1", "o2", "o1"])
    assert (f.counterfactuals, f.originals) == (3, 2)
    assert f.cf_row == pytest.approx(0.5) and f.orig_row == pytest.approx(3.0)
    assert f.cf_token == pytest.approx(1.5 / 20) and f.orig_token == pytest.approx(0.3)
    assert f.ratio_row == pytest.approx(0.5 / 3.0) and f.low
    assert SignalFigures.from_dict(f.as_dict()) == f
    assert "ratio 0.17 per row, 0.25 per token" in str(f)
    assert not summarise(kl, ["c1"], ["c1"]).low
    assert summarise(kl, [], ["o1"]) is None


def _testbed_rows(n: int = 12) -> list[dict]:
    from leaf.testbed.tasks import make_split

    return make_split("digit_sum", "train", n, seed=3, bias=0.0)


def test_prune_verify_prints_the_signal(tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", _testbed_rows())
    out = tmp_path / "cf.jsonl"
    mod = types.ModuleType("leaf.evaluate.verify")  # every counterfactual kept: no generation
    mod.check_counterfactuals = lambda rows, teacher, student, **kw: [Check(True) for _ in rows]
    monkeypatch.setitem(sys.modules, "leaf.evaluate.verify", mod)
    args = ["prune", "--data", str(data), "--out", str(out), "--masking", "planted", "--verify",
            "--teacher", "testbed:digit_sum/teacher", "--student", "testbed:digit_sum/student",
            "--device", "cpu"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "leaf prune: signal: KL(teacher || student) on response tokens: kept " \
           "counterfactuals" in err
    figures = json.loads(out.with_suffix(".signal.json").read_text())["figures"]
    assert figures["counterfactuals"] == 12 and figures["originals"] == 12
    assert figures["orig_kl_row"] > 0 and figures["cf_kl_row"] >= 0
    assert figures["ratio_row"] == pytest.approx(figures["cf_kl_row"] / figures["orig_kl_row"])
    assert f"ratio {figures['ratio_row']:.2f} per row" in err
    assert (LOW_SIGNAL_LINE in err) == (figures["ratio_row"] < 0.25)
    # a rerun measures nothing again: no model loads
    monkeypatch.setattr("leaf.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert main(args) == 0
    assert f"ratio {figures['ratio_row']:.2f} per row" in capsys.readouterr().err
