"""The testbed tokenizer: byte-level BPE with every digit its own token, Llama-3 chat template.

Teacher and student share it, so their logits line up id for id (needed for KL). Splitting
digits (as Llama-3 splits numbers into short digit groups) keeps arithmetic learnable for a
tiny model: ``15`` is ``1`` ``5``, never an opaque merged token.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from leaf.testbed.tiny import STYLES


def build_testbed_tokenizer(
    corpus: Iterable[str], vocab_size: int = 320, style: str = "llama3"
) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE on ``corpus`` that never merges digits."""
    spec = STYLES[style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=spec["specials"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=spec["bos"], eos_token=spec["eos"], pad_token=spec["pad"]
    )
    if spec["template"]:
        fast.chat_template = spec["template"]
    return fast
