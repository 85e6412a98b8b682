"""`leaf detect` end to end, and its scores recomputed independently from the formulas."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import write_jsonl
from leaf.cli import main
from leaf.data.templates import encode
from leaf.detect.segments import segment_boundaries

FIELDS = {"id", "level", "segment", "field", "prefix_end", "unit_kind", "units", "teacher",
          "student", "diff", "teacher_raw", "student_raw", "student_nll", "text_hash",
          "input_hash", "skip_last"}


def _detect(teacher, student, data, out, *extra):
    return main(["detect", "--teacher", str(teacher), "--student", str(student), "--data",
                 str(data), "--out", str(out), "--device", "cpu", "--batch-size", "2",
                 "--skip-last", "0", *extra])  # the formulas over the whole instruction


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _load(d):
    return AutoModelForCausalLM.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d)


def _g_by_hand(model, tok, instruction, response, target_start):
    """g_i per token, one sample, HF's own mean loss and loss.backward() on a clone."""
    enc = encode(tok, instruction, response, target_start=target_start)
    labels = [t if m else -100 for t, m in zip(enc.input_ids, enc.label_mask())]
    clone = copy.deepcopy(model)
    emb = clone.get_input_embeddings()(torch.tensor([enc.input_ids])).detach().requires_grad_()
    out = clone(inputs_embeds=emb, labels=torch.tensor([labels]))
    out.loss.backward()
    logp = torch.log_softmax(out.logits[0].detach().double(), -1)
    nll = [0.0] + [-logp[i - 1, t].item() for i, t in enumerate(enc.input_ids) if i > 0]
    return enc, emb.grad[0].norm(dim=-1).tolist(), nll


def _mm(v):
    v = np.asarray(v, dtype=float)
    return np.zeros_like(v) if v.max() == v.min() else (v - v.min()) / (v.max() - v.min())


def test_same_tokenizer_scores_match_the_formulas(tiny_llama_dir, tiny_llama_big_dir,
                                                  samples_file, tmp_path):
    out = tmp_path / "scores.jsonl"
    assert _detect(tiny_llama_big_dir, tiny_llama_dir, samples_file, out, "--level", "both") == 0
    rows = _rows(out)
    samples = {s["id"]: s for s in map(json.loads, samples_file.read_text().splitlines())}
    teacher, student = _load(tiny_llama_big_dir), _load(tiny_llama_dir)
    assert [(r["id"], r["level"], r["segment"]) for r in rows] == [
        (sid, lvl, k) for sid in "abc" for lvl, k in (("instruction", 0), ("response", 1))]
    for row in rows:
        assert set(row) == FIELDS and row["unit_kind"] == "token"
        s = samples[row["id"]]
        if row["level"] == "instruction":
            text, target, limit = s["instruction"], 0, None
            assert row["prefix_end"] is None and row["field"] == "instruction"
        else:
            (cut,) = segment_boundaries(s["response"], 2, student[1])
            assert row["prefix_end"] == cut and row["field"] == "response"
            text, target, limit = s["response"][:cut], cut, cut
        raw = {}
        for name, (model, tok) in (("teacher", teacher), ("student", student)):
            enc, g, nll = _g_by_hand(model, tok, s["instruction"], s["response"], target)
            units = enc.units(row["level"], limit)
            assert row["units"] == [[a, b] for _, a, b in units]
            raw[name] = [g[i] for i, _, _ in units]
            np.testing.assert_allclose(row[f"{name}_raw"], raw[name], rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(row[name], _mm(raw[name]), atol=1e-5)
            if name == "student":
                np.testing.assert_allclose(row["student_nll"], [nll[i] for i, _, _ in units],
                                           rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(row["diff"], _mm(_mm(raw["teacher"]) - _mm(raw["student"])),
                                   atol=1e-5)
        assert "".join(text[a:b] for a, b in row["units"]).strip() == text.strip()


def test_llama_qwen_pair_compares_words(tiny_llama_dir, tiny_qwen_dir, samples_file, tmp_path):
    out = tmp_path / "scores.jsonl"
    # the Llama-3-style template trims the instruction, ChatML keeps it: spans still agree
    extra = {"id": "d", "task": "math", "instruction": "  Let x + 3 = 10.\n What is x?  ",
             "response": "x = 7.\n\nThe answer is 7."}
    data = write_jsonl(tmp_path / "samples.jsonl",
                       [*map(json.loads, samples_file.read_text().splitlines()), extra])
    assert _detect(tiny_qwen_dir, tiny_llama_dir, data, out, "--level", "both",
                   "--segments", "3") == 0
    rows = _rows(out)
    samples = {s["id"]: s for s in map(json.loads, data.read_text().splitlines())}
    assert {r["id"] for r in rows} == set("abcd")
    assert {r["level"] for r in rows} == {"instruction", "response"}
    assert max(r["segment"] for r in rows) == 2
    teacher = _load(tiny_qwen_dir)
    for row in rows:
        s = samples[row["id"]]
        text = s["instruction"] if row["level"] == "instruction" else s["response"][
            : row["prefix_end"]]
        assert row["unit_kind"] == "word"
        assert [text[a:b] for a, b in row["units"]] == text.split()
        # every word got saliency (and NLL) from both models' tokens
        assert min(row["teacher_raw"]) > 0 and min(row["student_raw"]) > 0
        assert min(row["student_nll"]) > 0
        if row["level"] != "instruction":
            continue
        # teacher word norms from per-token norms, by spreading each token's g^2 evenly over
        # its visible characters and summing per word
        enc, g, _ = _g_by_hand(*teacher, s["instruction"], s["response"], 0)
        per_char = np.zeros(len(text))
        for i, a, b in enc.units("instruction"):
            vis = [c for c in range(a, b) if not text[c].isspace()]
            for c in vis:
                per_char[c] += g[i] ** 2 / len(vis)
        want = [np.sqrt(per_char[a:b].sum()) for a, b in row["units"]]
        np.testing.assert_allclose(row["teacher_raw"], want, rtol=1e-5)
        assert len(row["diff"]) == len(row["units"]) and min(row["diff"]) == 0.0


def test_resume_after_interruption_and_screened_filter(tiny_llama_dir, tiny_llama_big_dir,
                                                      samples_file, tmp_path, capsys):
    full = tmp_path / "full.jsonl"
    assert _detect(tiny_llama_big_dir, tiny_llama_dir, samples_file, full) == 0
    done = _rows(full)
    # an interrupted run: sample "a" complete, a half-written line of "b"
    out = tmp_path / "scores.jsonl"
    part = tmp_path / "scores.jsonl.part"
    first = json.dumps(done[0]) + "\n"
    part.write_text(first + json.dumps(done[1])[:40])
    capsys.readouterr()
    assert _detect(tiny_llama_big_dir, tiny_llama_dir, samples_file, out) == 0
    assert "2 scored, 1 already done" in capsys.readouterr().out
    assert not part.exists()
    resumed = _rows(out)
    assert [r["id"] for r in resumed] == ["a", "b", "c"]
    for got, want in zip(resumed, done):
        np.testing.assert_allclose(got["diff"], want["diff"], atol=1e-6)
    # a finished output: nothing to do
    assert _detect(tiny_llama_big_dir, tiny_llama_dir, samples_file, out) == 0
    assert "0 scored, 3 already done" in capsys.readouterr().out
    # another level into the same output is refused
    assert _detect(tiny_llama_big_dir, tiny_llama_dir, samples_file, out, "--level", "both") == 2
    assert "another --level" in capsys.readouterr().err
    # screened rows: only teacher-right/student-wrong unless --all
    rows = [dict(json.loads(x), teacher_correct=t, student_correct=s) for x, (t, s) in
            zip(samples_file.read_text().splitlines(), [(True, False), (True, True), (False, False)])]
    screened = write_jsonl(tmp_path / "screened.jsonl", rows)
    assert _detect(tiny_llama_big_dir, tiny_llama_dir, screened, tmp_path / "f.jsonl") == 0
    assert [r["id"] for r in _rows(tmp_path / "f.jsonl")] == ["a"]
    assert _detect(tiny_llama_big_dir, tiny_llama_dir, screened, tmp_path / "g.jsonl", "--all") == 0
    assert len(_rows(tmp_path / "g.jsonl")) == 3


@pytest.mark.parametrize(
    "content, pattern",
    [
        ('{"id": "a", "task": "math", "instruction": "hi", "response": "x"}\n{"id": "b", "task"\n',
         r"samples\.jsonl:2: not valid JSON"),
        ('{"id": "a", "task": "math", "instruction": "hi"}\n', r":1: field 'response'"),
        ('{"id": "a", "task": "mth", "instruction": "hi", "response": "x"}\n', r":1: field 'task'"),
    ],
)
def test_bad_input_lines_fail_with_file_line_field(content, pattern, tiny_llama_dir, tmp_path,
                                                   capsys):
    data = tmp_path / "samples.jsonl"
    data.write_text(content)
    assert _detect(tiny_llama_dir, tiny_llama_dir, data, tmp_path / "o.jsonl") == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and err.count("\n") == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_model_dir_and_bad_flags(tiny_llama_dir, samples_file, tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert _detect(missing, tiny_llama_dir, samples_file, tmp_path / "o.jsonl") == 2
    assert "no-such-model" in capsys.readouterr().err
    assert _detect(tiny_llama_dir, samples_file, samples_file, tmp_path / "o.jsonl") == 2
    assert "is a file" in capsys.readouterr().err
    assert _detect(tiny_llama_dir, tiny_llama_dir, samples_file, tmp_path / "o.jsonl",
                   "--segments", "1") == 2
    assert "--segments" in capsys.readouterr().err


def test_levels_plan_the_documented_rows():
    from leaf.detect.score_samples import plan_jobs

    s = {"id": "a", "instruction": "Q?", "response": "Step 1: a.\nStep 2: b.\nStep 3: c."}
    assert [(j.level, j.segment, j.prefix_end) for j in plan_jobs(s)] == [("instruction", 0, None)]
    resp = plan_jobs(s, "response", 3)
    assert [(j.segment, j.text) for j in resp] == [(1, "Step 1: a.\n"), (2, "Step 1: a.\nStep 2: b.\n")]
    assert [j.level for j in plan_jobs(s, "both")] == ["instruction", "response"]
    with pytest.raises(ValueError):
        plan_jobs(s, "prefix")
