"""Tiny Llama- and Qwen2-architecture models with locally trained tokenizers.

Used by the tests, the testbed and the benchmarks: nothing is downloaded. The chat templates
below imitate the layout of Llama-3 (header tokens, ``<|eot_id|>``, trimmed content) and of
ChatML as used by Qwen2 (``<|im_start|>``/``<|im_end|>``, a default system turn).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

LLAMA3_STYLE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STYLES = {
    "llama3": dict(
        template=LLAMA3_STYLE_TEMPLATE,
        specials=["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|pad|>"],
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|pad|>",
    ),
    "chatml": dict(
        template=CHATML_TEMPLATE,
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None, eos="<|im_end|>", pad="<|endoftext|>",
    ),
    "plain": dict(template=None, specials=["<s>", "</s>", "<pad>"], bos="<s>", eos="</s>",
                  pad="<pad>"),
}

DEFAULT_CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.",
    "How many clips did Natalia sell altogether in April and May? The answer is 72.",
    "Let x be a real number such that x + 3 = 10. Then x = 7, so the answer is \\boxed{7}.",
    "def add(a, b):\n    return a + b\n",
    "Question: Who wrote the novel? Answer: the author of the book.",
    "Step 1: compute 12 * 3 = 36. Step 2: add 4 to get 40. The answer is 40.",
    "A hint: some people say the answer is 15, but check it yourself.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * / = ( ) ; : ? ! .",
]


def build_tokenizer(
    style: str = "llama3",
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    *,
    split_digits: bool = False,
    repeats: int = 4,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` (seen ``repeats`` times) and give it a
    chat template; ``split_digits`` makes every digit its own token."""
    spec = STYLES[style]
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits else byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=spec["specials"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus or DEFAULT_CORPUS) * repeats, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["pad"],
    )
    if spec["template"]:
        fast.chat_template = spec["template"]
    return fast


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    arch: str = "llama",
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    max_positions: int = 512,
    seed: int = 0,
):
    """A randomly initialised causal LM of the given architecture sized to the tokenizer."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch](**common)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def save_tiny(
    path: str | Path,
    style: str = "llama3",
    arch: str = "llama",
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    **model_kwargs,
) -> Path:
    """Build and save a tiny model and its tokenizer to ``path``; return the path."""
    path = Path(path)
    tokenizer = build_tokenizer(style, corpus, vocab_size)
    model = build_model(tokenizer, arch, **model_kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
