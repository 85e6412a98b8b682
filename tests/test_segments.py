import pytest

from leaf.detect.segments import segment_boundaries


def _parts(text, cuts):
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def test_step_markers_win_and_whitespace_stays_in_the_prefix():
    r = "Step 1: 48 / 2 = 24.\nStep 2: 48 + 24 = 72.\nStep 3: so 72.\nThe answer is 72."
    (cut,) = segment_boundaries(r, 2)
    assert r[cut:].startswith("Step ")
    assert r[:cut].endswith("\n")
    cuts = segment_boundaries(r, 3)
    assert [r[c:].split(":")[0] for c in cuts] == ["Step 2", "Step 3"]
    # inline markers count too ("... Step 2: ..." on one line), case-insensitively
    inline = "step 1: compute 12 * 3 = 36. Step 2: add 4 to get 40. The answer is 40."
    (cut,) = segment_boundaries(inline, 2)
    assert inline[cut:].startswith("Step 2") and inline[:cut].endswith(" ")


def test_paragraphs_then_lines_then_tokens():
    para = "First we look.\nStill first.\n\nThen we add.\nMore.\n\nDone: 5."
    cuts = segment_boundaries(para, 3)
    assert _parts(para, cuts) == ["First we look.\nStill first.\n\n", "Then we add.\nMore.\n\n",
                                  "Done: 5."]
    lines = "a = 1\nb = 2\nc = 3\nd = 4\nanswer 10"
    (cut,) = segment_boundaries(lines, 2)
    assert lines[:cut] == "a = 1\nb = 2\nc = 3\n"  # the newline nearest the middle
    flat = "one two three four five six seven eight"
    assert _parts(flat, segment_boundaries(flat, 2)) == ["one two three four ", "five six seven eight"]


def test_token_fallback_uses_the_tokenizer(llama_tok):
    flat = "Natalia sold clips to 48 of her friends in April"
    (cut,) = segment_boundaries(flat, 2, tokenizer=llama_tok)
    enc = llama_tok(flat, add_special_tokens=False, return_offsets_mapping=True)
    starts = [s for s, _ in enc["offset_mapping"]]
    assert flat[cut - 1] == " " and (cut in starts or cut - 1 in starts)  # space stays in prefix
    n_before = sum(s < cut - 1 for s in starts)
    assert abs(n_before - len(starts) / 2) <= 1


@pytest.mark.parametrize("k", [2, 3])
def test_boundaries_are_increasing_and_leave_non_blank_parts(k):
    texts = ["x = 7.\nThe answer is \\boxed{7}.", "Step 1: a.\n\nStep 2: b.", "short answer here",
             "The answer is 72.", "line\n\n\n   \nline two\nthree"]
    for text in texts:
        cuts = segment_boundaries(text, k)
        assert cuts == sorted(set(cuts))
        assert all(p.strip() for p in _parts(text, cuts))
        assert len(cuts) == k - 1


def test_too_short_and_bad_k():
    assert segment_boundaries("42", 2) == []
    assert segment_boundaries("", 3) == []
    with pytest.raises(ValueError):
        segment_boundaries("a b c", 1)
