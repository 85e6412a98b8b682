"""Two detection rules met on a real chat model: the tail of a scored text can be left unscored
(`--skip-last`), and response boundaries fall between words when teacher and student tokenise
differently (detection then compares on words)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from transformers import AutoTokenizer

from conftest import write_jsonl
from leaf.cli import main
from leaf.detect.score_samples import plan_jobs
from leaf.detect.segments import segment_boundaries

RESPONSE = ("Natalia sold 48 clips in April and then she sold half as many in May so she "
            "buys 8 more clips.")


def _detect(teacher, student, data, out, *extra):
    return main(["detect", "--teacher", str(teacher), "--student", str(student), "--data",
                 str(data), "--out", str(out), "--device", "cpu", *extra])


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _between_words(text, cut):
    return 0 < cut < len(text) and text[cut - 1].isspace() and not text[cut].isspace()


def _mm(v):
    v = np.asarray(v, dtype=float)
    return np.zeros_like(v) if v.max() == v.min() else (v - v.min()) / (v.max() - v.min())


def test_cross_tokenizer_response_boundaries_fall_between_words(tiny_llama_dir, tiny_qwen_dir,
                                                                tmp_path):
    teacher_tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    student_tok = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    # the student's own token cuts do land inside words on this text (the case being fixed)
    token_cuts = [c for k in (2, 3, 4, 5) for c in segment_boundaries(RESPONSE, k, student_tok)]
    assert any(not _between_words(RESPONSE, c) for c in token_cuts)
    sample = {"id": "s", "task": "math", "instruction": "How many clips?", "response": RESPONSE,
              "answer": "72"}
    for k in (2, 3, 4, 5):
        cuts = [j.prefix_end for j in plan_jobs(sample, "response", k, student_tok, teacher_tok)]
        assert len(cuts) == k - 1 and all(_between_words(RESPONSE, c) for c in cuts), (k, cuts)
    # end to end: `leaf detect --level response` with two tokenizers
    data = write_jsonl(tmp_path / "s.jsonl", [sample, {**sample, "id": "t", "response":
                       "The author wrote it in one long summer and everybody loved reading it."}])
    out = tmp_path / "scores.jsonl"
    assert _detect(tiny_llama_dir, tiny_qwen_dir, data, out, "--level", "response",
                   "--segments", "3") == 0
    rows = _rows(out)
    assert len(rows) == 4 and {r["unit_kind"] for r in rows} == {"word"}
    texts = {"s": RESPONSE, "t": json.loads(data.read_text().splitlines()[1])["response"]}
    for r in rows:
        assert _between_words(texts[r["id"]], r["prefix_end"]), r["prefix_end"]


def test_same_tokenizer_keeps_token_boundaries(tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    sample = {"id": "s", "instruction": "Q?", "response": RESPONSE}
    assert [j.prefix_end for j in plan_jobs(sample, "response", 3, tok, tok)] == \
        segment_boundaries(RESPONSE, 3, tok)


def test_skip_last_leaves_the_tail_unscored_and_renormalises(tiny_llama_dir, tiny_llama_big_dir,
                                                             samples_file, tmp_path):
    full, skipped = tmp_path / "full.jsonl", tmp_path / "skip.jsonl"
    assert _detect(tiny_llama_big_dir, tiny_llama_dir, samples_file, full, "--level", "both",
                   "--skip-last", "0") == 0
    assert _detect(tiny_llama_big_dir, tiny_llama_dir, samples_file, skipped, "--level", "both",
                   "--skip-last", "2") == 0
    for a, b in zip(_rows(full), _rows(skipped), strict=True):
        if a["level"] == "response":  # response prefixes are scored whole
            assert a == b and b["skip_last"] == 0
            continue
        assert (a["skip_last"], b["skip_last"]) == (0, 2)
        n = len(a["units"]) - 2  # same tokenizer: units are the student's tokens
        assert b["units"] == a["units"][:n]
        # raw gradients do not depend on what is scored; normalisation is over the kept units
        np.testing.assert_allclose(b["teacher_raw"], a["teacher_raw"][:n], rtol=1e-5)
        np.testing.assert_allclose(b["student_raw"], a["student_raw"][:n], rtol=1e-5)
        np.testing.assert_allclose(b["student"], _mm(a["student_raw"][:n]), atol=1e-6)
        np.testing.assert_allclose(
            b["diff"], _mm(_mm(a["teacher_raw"][:n]) - _mm(a["student_raw"][:n])), atol=1e-6)
    # resuming into a file scored with another --skip-last is refused
    assert _detect(tiny_llama_big_dir, tiny_llama_dir, samples_file, skipped, "--level", "both",
                   "--skip-last", "3") == 2


@pytest.mark.parametrize("skip", [1, 4])
def test_skip_last_with_word_units_drops_words_reaching_the_tail(tiny_llama_dir, tiny_qwen_dir,
                                                                samples_file, tmp_path, skip):
    out = tmp_path / "scores.jsonl"
    assert _detect(tiny_llama_dir, tiny_qwen_dir, samples_file, out, "--skip-last",
                   str(skip)) == 0
    student_tok = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    samples = {json.loads(x)["id"]: json.loads(x) for x in samples_file.read_text().splitlines()}
    for r in _rows(out):
        text = samples[r["id"]]["instruction"]
        starts = [s for s, e in student_tok(text, add_special_tokens=False,
                                            return_offsets_mapping=True)["offset_mapping"]
                  if e > s]
        assert r["unit_kind"] == "word"
        assert r["units"][-1][1] <= starts[-skip]
        words = [list(w) for w in ((m.start(), m.end()) for m in
                                   re.finditer(r"\S+", text))]
        assert r["units"] == [w for w in words if w[1] <= starts[-skip]]
