"""Candidate selection, spans and removal, checked against plain re-derivations of the rules."""

from __future__ import annotations

import random
import statistics

import pytest

from leaf.detect.spans import (
    Confounders,
    blank_mask,
    build_spans,
    confounders,
    cut,
    gradient_candidates,
    prune_plans,
    remove_spans,
)
from leaf.detect.thresholds import minmax, normalised_difference, threshold


def ref_minmax(xs):
    lo, hi = min(xs), max(xs)
    return [0.0] * len(xs) if hi == lo else [(x - lo) / (hi - lo) for x in xs]


def ref_confounders(g_t, g_s, tau):
    """Paper eq.: norm(gh_T - gh_S) <= tau, written out by hand."""
    d = [a - b for a, b in zip(ref_minmax(g_t), ref_minmax(g_s))]
    return [v <= tau for v in ref_minmax(d)]


def words(text):
    """Units at every maximal run of non-space or of space characters."""
    units, i = [], 0
    while i < len(text):
        j = i + 1
        while j < len(text) and text[j].isspace() == text[i].isspace():
            j += 1
        units.append([i, j])
        i = j
    return units


def test_scoring_matches_the_paper_formula():
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(2, 30)
        g_t = [rng.uniform(0, 5) for _ in range(n)]
        g_s = [rng.uniform(0, 0.01) for _ in range(n)]  # scales differ: normalisation matters
        d = normalised_difference(g_t, g_s)
        raw_d = [a - b for a, b in zip(ref_minmax(g_t), ref_minmax(g_s))]
        for tau in (0.05, 0.10, 0.15):
            flags, t = gradient_candidates(d, [False] * n, "fixed", tau=tau)
            if max(raw_d) - min(raw_d) < 1e-12:  # e.g. n = 2 in the same order: no contrast
                assert flags == [False] * n
                continue
            assert t == tau
            assert flags == ref_confounders(g_t, g_s, tau)


def test_hand_made_fixed_tau():
    # teacher ignores unit 2, student leans on it -> d lowest there
    g_t = [1.0, 2.0, 0.0, 3.0]
    g_s = [1.0, 1.0, 4.0, 1.0]
    # gh_T = [1/3, 2/3, 0, 1]; gh_S = [0, 0, 1, 0]; d = [1/3, 2/3, -1, 1]
    # norm d = [2/3, 5/6, 0, 1]
    d = normalised_difference(g_t, g_s)
    assert d.tolist() == pytest.approx([2 / 3, 5 / 6, 0.0, 1.0])
    assert gradient_candidates(d, [False] * 4, "fixed", tau=0.10)[0] == [False, False, True, False]
    assert gradient_candidates(d, [False] * 4, "fixed", tau=0.7)[0] == [True, False, True, False]


def test_all_equal_scores_flag_nothing():
    assert minmax([2.0, 2.0, 2.0]).tolist() == [0.0, 0.0, 0.0]
    d = normalised_difference([1.0, 5.0, 3.0], [1.0, 5.0, 3.0])  # models agree everywhere
    assert d.tolist() == [0.0, 0.0, 0.0]
    for mode in ("fixed", "quantile", "iqr"):
        flags, t = gradient_candidates(d, [False] * 3, mode)
        assert flags == [False] * 3 and t == float("-inf")
    assert gradient_candidates([0.3], [False], "fixed")[0] == [False]
    assert gradient_candidates([], [], "fixed") == ([], float("-inf"))


def test_quantile_mode_is_the_released_rule():
    rng = random.Random(2)
    for _ in range(200):
        n = rng.randint(2, 60)
        d = [rng.random() for _ in range(n)]
        if rng.random() < 0.3:  # many ties and a minimum above the cap
            d = [0.6 + round(v, 1) for v in d]
        q = rng.choice([0.0, 0.05, 0.1, 0.5, 0.9])
        ref_t = min(sorted(d)[int(q * n)], 0.5)
        flags, t = gradient_candidates(d, [False] * n, "quantile", quantile=q)
        if max(d) == min(d):
            continue
        assert t == pytest.approx(ref_t)
        assert flags == [v <= ref_t for v in d]


def test_quantile_cap_and_bad_q():
    assert threshold([0.6, 0.7, 0.9, 1.0], "quantile", quantile=0.5) == 0.5
    with pytest.raises(ValueError):
        threshold([0.1, 0.2], "quantile", quantile=1.0)
    with pytest.raises(ValueError):
        threshold([0.1, 0.2], "median")


def test_iqr_mode():
    d = [0.0, 0.55, 0.6, 0.62, 0.65, 0.7, 0.71, 0.75, 0.8, 1.0]
    q1, _, q3 = statistics.quantiles(d, n=4, method="inclusive")
    ref_t = q1 - 1.5 * (q3 - q1)
    flags, t = gradient_candidates(d, [False] * len(d), "iqr")
    assert t == pytest.approx(ref_t)
    assert flags == [True] + [False] * 9  # only the outlier


def test_whitespace_units_never_flagged():
    text = "a  \n\tb \u00a0 c"
    units = [[0, 1], [1, 4], [4, 5], [5, 6], [6, 7], [7, 8], [8, 9], [9, 9]]
    blank = blank_mask(text, units)
    assert blank == [False, True, True, False, True, True, True, True]
    d = [1.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    for mode, kw in (("fixed", {"tau": 0.6}), ("quantile", {"quantile": 0.9})):
        flags, _ = gradient_candidates(d, blank, mode, **kw)
        assert not any(f and b for f, b in zip(flags, blank))
    assert gradient_candidates(d, blank, "fixed", tau=0.6)[0][3] is True


def test_spans_bridge_whitespace_only():
    text = "a = 3 ; rumor : 15 ; query a"
    units = words(text)
    toks = [text[s:e] for s, e in units]
    flag_words = {"rumor", ":", "15"}
    flags = [t in flag_words for t in toks]
    spans = build_spans(text, units, flags)
    # "rumor : 15" is one span (only spaces between), the ":" in "a = 3" context is separate
    assert [text[s:e] for s, e in spans] == ["rumor : 15"]
    # a non-candidate word breaks a span
    flags = [t in {"rumor", "15"} for t in toks]
    assert [text[s:e] for s, e in build_spans(text, units, flags)] == ["rumor", "15"]
    # units with gaps between them (words without their spaces) still join across the gap
    text2 = "x\n\ty z"
    assert build_spans(text2, [[0, 1], [3, 4], [5, 6]], [True, True, False]) == [(0, 4)]
    # overlapping units (byte pieces of one character) merge
    assert build_spans("é!", [[0, 1], [0, 1], [1, 2]], [True, True, False]) == [(0, 1)]


def test_confounders_composes_the_rule():
    text = "a = 3 ; rumor : 15 ; query a"
    units = words(text)
    d = [0.0 if text[s:e] in {"rumor", ":", "15"} else 1.0 for s, e in units]
    d[1] = 0.0  # a whitespace unit with the lowest difference: still never a candidate
    rule = confounders(text, units, d, "fixed", tau=0.1)
    blank = blank_mask(text, units)
    flags, t = gradient_candidates(d, blank, "fixed", tau=0.1)
    assert rule == Confounders(tuple(flags), tuple(build_spans(text, units, flags)), t)
    assert [text[s:e] for s, e in rule.spans] == ["rumor : 15"] and rule.threshold == 0.1
    flat = confounders(text, units, [0.0] * len(units))
    assert not any(flat.flags) and flat.spans == () and flat.threshold == float("-inf")
    with pytest.raises(ValueError, match="differences"):
        confounders(text, units, d[:-1])


@pytest.mark.parametrize(
    ("text", "span", "expected"),
    [
        ("a 15 b", (2, 4), "a b"),  # doubled space collapses to one
        ("a\t15  b", (2, 4), "a  b"),  # the run before goes, the run after stays
        ("x 15\ny", (2, 4), "x\ny"),  # no trailing space before a newline
        ("x 15", (2, 4), "x"),  # nor at the end
        ("15 apples", (0, 2), "apples"),  # start of text
        ("p\n15 apples", (2, 4), "p\napples"),  # start of a line
        ("rumor: 15.", (7, 9), "rumor: ."),  # punctuation after: exact cut
        ("ab15cd", (2, 4), "abcd"),
        ("a \n15\n b", (3, 5), "a \n\n b"),  # newlines are never widened across
    ],
)
def test_cut_whitespace_rules(text, span, expected):
    s, e = cut(text, span)
    assert text[:s] + text[e:] == expected
    assert s <= span[0] and e >= span[1]
    assert not text[s:span[0]].strip(" \t") and not text[span[1]:e].strip(" \t")


def test_prune_plans_span_vs_collective():
    text = "keep A keep B keep"
    spans = [(5, 6), (12, 13)]
    per_span = prune_plans(text, spans, "span")
    assert [remove_spans(text, p) for p in per_span] == ["keep keep B keep", "keep A keep keep"]
    (coll,) = prune_plans(text, spans, "collective")
    assert remove_spans(text, coll) == "keep keep keep"
    assert prune_plans(text, [], "span") == [] and prune_plans(text, [], "collective") == []
    with pytest.raises(ValueError):
        prune_plans(text, spans, "all")


ALPHABET = ["a", "b", "7", "é", "😀", " ", " ", "  ", "\t", "\n", ".", ":", "\u00a0"]


def test_removal_keeps_everything_else_byte_for_byte():
    rng = random.Random(0)
    for _ in range(400):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40)))
        cuts = sorted({0, len(text), *rng.sample(range(len(text) + 1), rng.randint(0, len(text)))})
        units = [[a, b] for a, b in zip(cuts, cuts[1:])]
        diff = [rng.random() for _ in units]
        blank = blank_mask(text, units)
        flags, _ = gradient_candidates(diff, blank, "fixed", tau=0.4)
        spans = build_spans(text, units, flags)
        for strategy in ("span", "collective"):
            for plan in prune_plans(text, spans, strategy):
                removed = set()
                for s, e in plan:
                    removed.update(range(s, e))
                # the pruned text is exactly the original minus the recorded characters
                kept = "".join(c for i, c in enumerate(text) if i not in removed)
                assert remove_spans(text, plan) == kept
                assert all(0 <= s < e <= len(text) for s, e in plan)
                assert all(a[1] <= b[0] for a, b in zip(plan, plan[1:]))
                for (s, e), f in zip(units, flags):
                    inside = set(range(s, e)) <= removed
                    if f and strategy == "collective":
                        assert inside  # every flagged unit goes
                    if not f:  # other text stays (a cut may only take its whitespace)
                        assert all(text[i].isspace() for i in set(range(s, e)) & removed)
                # beyond flagged units, only whitespace is ever removed
                flagged = {i for (s, e), f in zip(units, flags) if f for i in range(s, e)}
                assert all(text[i].isspace() for i in removed - flagged)


def test_no_doubled_spaces_in_single_spaced_text():
    rng = random.Random(3)
    for _ in range(200):
        text = " ".join(rng.choice(["ab", "7", "x", "é.", "15"]) for _ in range(rng.randint(1, 12)))
        units = words(text)
        blank = blank_mask(text, units)
        flags, _ = gradient_candidates([rng.random() for _ in units], blank, "fixed", tau=0.3)
        for strategy in ("span", "collective"):
            for plan in prune_plans(text, build_spans(text, units, flags), strategy):
                out = remove_spans(text, plan)
                assert "  " not in out and out == out.strip()


@pytest.mark.parametrize("tok_fixture", ["llama_tok", "chatml_tok"])
def test_real_token_units(request, tok_fixture):
    """Units from a tokenizer's offsets (leading spaces inside tokens or not) prune cleanly."""
    from leaf.data.templates import encode

    tok = request.getfixturevalue(tok_fixture)
    text = "Natalia sold 48 clips.  A hint:\n the answer is 15!\tHow many?"
    units = [[s, e] for _, s, e in encode(tok, text, "72").units("instruction")]
    assert units and all(0 <= s <= e <= len(text) for s, e in units)
    rng = random.Random(4)
    for _ in range(50):
        blank = blank_mask(text, units)
        flags, _ = gradient_candidates([rng.random() for _ in units], blank, "fixed", tau=0.3)
        assert not any(f and b for f, b in zip(flags, blank))
        (plan,) = prune_plans(text, build_spans(text, units, flags), "collective") or [[]]
        out = remove_spans(text, plan)
        removed = {i for s, e in plan for i in range(s, e)}
        assert out == "".join(c for i, c in enumerate(text) if i not in removed)
        flagged = {i for (s, e), f in zip(units, flags) if f for i in range(s, e)}
        assert flagged <= removed
        assert all(text[i].isspace() for i in removed - flagged)
