"""The testbed tokenizer: byte-level BPE with every digit its own token, Llama-3 chat template.

Teacher and student share it, so their logits line up id for id (needed for KL). Splitting
digits (as Llama-3 splits numbers into short digit groups) keeps arithmetic learnable for a
tiny model: ``15`` is ``1`` ``5``, never an opaque merged token.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

from leaf.testbed.tiny import build_tokenizer


def build_testbed_tokenizer(
    corpus: Iterable[str], vocab_size: int = 320, style: str = "llama3"
) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE on ``corpus`` that never merges digits."""
    return build_tokenizer(style, list(corpus), vocab_size, split_digits=True, repeats=1)
