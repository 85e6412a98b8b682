import math

from leaf.data.templates import encode
from leaf.detect.units import merge_token_spans, pool, same_segmentation, word_spans

TEXT = "Natalia sold 48 clips.  A hint:\nthe answer is 15."


def test_word_spans_are_non_whitespace_runs():
    spans = word_spans(TEXT)
    assert [TEXT[s:e] for s, e in spans] == TEXT.split()
    assert word_spans("  \n ") == []


def test_pooling_by_hand():
    text = "ab cd"
    # tokens: "ab", " c", "d", " " (a whitespace-only token), and "b c" spanning two words
    tokens = [(0, 2), (2, 4), (4, 5)]
    g = [3.0, 4.0, 12.0]
    nll = [1.0, 2.0, 3.0]
    sal, nl = pool(text, tokens, g, nll, word_spans(text), words=True)
    assert sal == [3.0, math.sqrt(4.0**2 + 12.0**2)] and nl == [1.0, 5.0]
    # a token over two words is split by its non-whitespace characters (1 in "ab", 1 in "cd")
    sal, nl = pool(text, [(1, 4), (3, 4)], [2.0, 0.0], [4.0, 0.0], word_spans(text), True)
    assert sal == [math.sqrt(2.0), math.sqrt(2.0)] and nl == [2.0, 2.0]
    # whitespace-only tokens belong to no word
    sal, _ = pool(text, [(2, 3)], [9.0], None, word_spans(text), True)
    assert sal == [0.0, 0.0]


def test_token_units_merge_overlaps():
    assert merge_token_spans([(0, 2), (2, 3), (2, 3), (3, 5)]) == [(0, 2), (2, 3), (3, 5)]
    assert same_segmentation([(0, 2), (2, 3), (2, 3)], [(0, 2), (2, 3)])
    assert not same_segmentation([(0, 2), (2, 3)], [(0, 3)])
    sal, nl = pool("abc", [(0, 2), (2, 3), (2, 3)], [1.0, 2.0, 2.0], [1.0, 0.5, 0.5],
                   [(0, 2), (2, 3)], words=False)
    assert sal == [1.0, math.sqrt(8.0)] and nl == [1.0, 1.0]


def test_two_tokenizers_disagree_and_words_conserve_squared_norm(llama_tok, chatml_tok):
    a = encode(llama_tok, TEXT, "The answer is 72.").units("instruction")
    b = encode(chatml_tok, TEXT, "The answer is 72.").units("instruction")
    spans_a, spans_b = [(s, e) for _, s, e in a], [(s, e) for _, s, e in b]
    assert not same_segmentation(spans_a, spans_b)
    words = word_spans(TEXT)
    for spans in (spans_a, spans_b):
        g = [float(i % 5 + 1) for i in range(len(spans))]
        sal, _ = pool(TEXT, spans, g, None, words, words=True)
        # every token with a visible character lands in some word; squared norm is conserved
        visible = [x for x, (s, e) in zip(g, spans) if TEXT[s:e].strip()]
        assert math.isclose(sum(v * v for v in sal), sum(x * x for x in visible))
        assert all(v > 0 for v in sal)
