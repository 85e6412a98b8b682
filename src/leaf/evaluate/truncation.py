"""Answers cut at ``max_new_tokens``: how many is too many, and the one-line warning.

A generation stage (screen, verification in prune, eval) counts the answers that ran out of
tokens before the model ended them (:class:`leaf.evaluate.generation.Answer`); those are graded
wrong. A few cut answers can be a model rambling; more than :data:`WARN_SHARE` of a stage's
answers means the budget is too small for the data, and every accuracy the stage reports is
then an accuracy of cut-off text: the stage warns, naming the setting to raise.
"""

from __future__ import annotations

#: warn when more than this share of a stage's answers were cut (2%: one in fifty)
WARN_SHARE = 0.02


def share_text(cut: int, total: int) -> str:
    """``3 of 120 (2.5%)``."""
    return f"{cut} of {total} ({100 * cut / total:.1f}%)" if total else f"{cut} of 0"


def too_many_cut(cut: int, total: int) -> bool:
    """More than :data:`WARN_SHARE` of ``total`` answers were cut."""
    return total > 0 and cut / total > WARN_SHARE


def cut_warning(cut: int, total: int, what: str, section: str, max_new_tokens: int,
                flag: str = "--max-new-tokens") -> str | None:
    """The warning for a stage whose ``cut`` of ``total`` answers (``what``: "teacher answers")
    hit ``max_new_tokens``, or None when at most :data:`WARN_SHARE` were. ``section``: the run
    config section whose ``max_new_tokens`` sets the budget (``screen``, ``evaluate``)."""
    if not too_many_cut(cut, total):
        return None
    return (f"{share_text(cut, total)} {what} were cut at max_new_tokens {max_new_tokens} "
            f"before the model ended them, and graded wrong; raise {section}.max_new_tokens in "
            f"a run config ({flag} on the command)")
