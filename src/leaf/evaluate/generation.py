"""Answer instructions with a model: one interface, two backends.

Both backends render the prompt with the tokenizer's chat template
(:func:`leaf.data.templates.prompt_text`, the same prefix that training sees), optionally add an
assistant ``prefix`` to continue from (response-level counterfactuals), and return only the new
text. Decoding is greedy unless ``temperature > 0``; it stops at EOS or at the template's
end-of-turn token (``<|eot_id|>``, ``<|im_end|>``, ...), or is cut at ``max_new_tokens``.

:meth:`_Generator.answers` says which: each :class:`Answer` holds the text and ``truncated``
(no stop token within ``max_new_tokens``). A cut answer is not an answer: the stages mark it
(``truncated: true``) and grading counts it wrong. :meth:`_Generator.generate` returns the
texts alone, for callers that only need them.

- :class:`HFGenerator`: ``transformers`` ``generate``, batched with left padding; prompts are
  sorted by length so batches pad little, and results come back in input order.
- :class:`VLLMGenerator`: vLLM, an optional extra (``pip install leaf-distill[vllm]``), imported
  only when asked for.

Use :func:`make_generator` to get either from a model directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from leaf.data.templates import chat_layout, prompt_text
from leaf.errors import LeafError
from leaf.models import input_device, load_model, load_tokenizer

BACKENDS = ("hf", "vllm")


@dataclass(frozen=True)
class Answer:
    """One continuation: its text, and whether it was cut at ``max_new_tokens`` (no stop
    token came before the budget ran out) rather than ended by the model."""

    text: str
    truncated: bool = False


@dataclass
class GenerationSettings:
    """Decoding knobs shared by the backends."""

    max_new_tokens: int = 512
    batch_size: int = 8
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    progress: bool = True


def prompts_for(tokenizer, instructions: Sequence[str],
                prefixes: Sequence[str | None] | None = None) -> list[str]:
    """Chat-template prompt for each instruction, followed by its assistant prefix if any."""
    if prefixes is not None and len(prefixes) != len(instructions):
        raise ValueError("prefixes must be None or one per instruction")
    out = []
    for i, instruction in enumerate(instructions):
        prefix = (prefixes[i] if prefixes is not None else None) or ""
        out.append(prompt_text(tokenizer, instruction) + prefix)
    return out


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """EOS ids of the tokenizer and the model, plus the template's end-of-turn token."""
    ids: list[int] = []

    def add(value) -> None:
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)

    add(tokenizer.eos_token_id)
    gen_eos = getattr(generation_config, "eos_token_id", None) if generation_config else None
    add(gen_eos)
    if getattr(tokenizer, "chat_template", None):
        end = chat_layout(tokenizer, "x").end_of_turn.strip()
        if end:
            end_ids = tokenizer(end, add_special_tokens=False)["input_ids"]
            # only a single special token is a reliable stop id (a text ending is not)
            if len(end_ids) == 1 and end_ids[0] in tokenizer.all_special_ids + list(
                getattr(tokenizer, "added_tokens_decoder", {}) or {}
            ):
                add(end_ids[0])
    if not ids:
        raise LeafError("the tokenizer has no EOS token and the template no end-of-turn token")
    return ids


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int):
    """``(input_ids, attention_mask)`` with every prompt ending at the last column, so the
    first generated token of every row follows its own prompt directly."""
    import torch  # heavy: torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


class _Generator:
    """What both backends share: ``generate`` on top of ``_sample`` and the greedy check."""

    settings: GenerationSettings

    def answers(self, instructions: Sequence[str],
                prefixes: Sequence[str | None] | None = None) -> list[Answer]:
        """One :class:`Answer` per instruction (after its optional assistant prefix)."""
        return [r[0] for r in self.answers_n(instructions, prefixes, n=1)]

    def answers_n(self, instructions: Sequence[str],
                  prefixes: Sequence[str | None] | None = None, n: int = 1
                  ) -> list[list[Answer]]:
        """``n`` :class:`Answer` per instruction (``n > 1`` needs ``temperature > 0``)."""
        if n > 1 and self.settings.temperature <= 0:
            raise LeafError("several samples per prompt need --temperature > 0 (greedy repeats)")
        return self._sample(instructions, prefixes, n)

    def generate(self, instructions: Sequence[str],
                 prefixes: Sequence[str | None] | None = None) -> list[str]:
        """The text of :meth:`answers` (whether an answer was cut is dropped)."""
        return [a.text for a in self.answers(instructions, prefixes)]

    def generate_n(self, instructions: Sequence[str],
                   prefixes: Sequence[str | None] | None = None, n: int = 1) -> list[list[str]]:
        """The texts of :meth:`answers_n`."""
        return [[a.text for a in r] for r in self.answers_n(instructions, prefixes, n)]

    def _sample(self, instructions, prefixes, n: int) -> list[list[Answer]]:
        raise NotImplementedError


class HFGenerator(_Generator):
    """Batched generation with a loaded ``transformers`` model and tokenizer."""

    def __init__(self, model, tokenizer, settings: GenerationSettings | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.settings = settings or GenerationSettings()
        if tokenizer.pad_token_id is None:
            raise LeafError("the tokenizer needs a pad token (load it with leaf.models.load_tokenizer)")
        self.stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))

    def _sample(self, instructions, prefixes, n: int) -> list[list[Answer]]:
        import torch  # heavy: torch
        from tqdm.auto import tqdm  # heavy: tqdm

        s = self.settings
        texts = prompts_for(self.tokenizer, instructions, prefixes)
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[list[Answer]] = [[] for _ in encoded]
        device = input_device(self.model)
        pad = self.tokenizer.pad_token_id
        if s.temperature > 0:
            torch.manual_seed(s.seed)
        batches = [order[i:i + s.batch_size] for i in range(0, len(order), s.batch_size)]
        for batch in tqdm(batches, desc="generate", unit="batch", disable=not s.progress,
                          leave=False):
            ids, mask = left_pad([encoded[i] for i in batch], pad)
            width = ids.shape[1]
            kwargs = dict(max_new_tokens=s.max_new_tokens, eos_token_id=self.stop_ids,
                          pad_token_id=pad, num_return_sequences=n)
            if s.temperature > 0:
                kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                out = self.model.generate(input_ids=ids.to(device),
                                          attention_mask=mask.to(device), **kwargs)
            new = out[:, width:].tolist()
            for row, i in enumerate(batch):
                for seq in new[row * n:(row + 1) * n]:
                    results[i].append(self._decode(seq))
        return results

    def _decode(self, seq: list[int]) -> Answer:
        """The text before the first stop token; without one the row ran to the end of the
        batch, which only a row still unfinished at ``max_new_tokens`` does: it was cut (rows
        that stopped earlier are padded after their stop token)."""
        for pos, tok in enumerate(seq):
            if tok in self.stop_ids:
                return Answer(self.tokenizer.decode(seq[:pos], skip_special_tokens=True))
        return Answer(self.tokenizer.decode(seq, skip_special_tokens=True), truncated=True)


class VLLMGenerator(_Generator):
    """The same interface on vLLM (optional dependency, imported here only)."""

    def __init__(self, model_path: str, tokenizer, settings: GenerationSettings | None = None,
                 dtype: str = "auto") -> None:
        try:
            from vllm import LLM  # optional: vLLM
        except ImportError:
            raise LeafError(
                "--backend vllm needs vLLM, which is not installed: "
                "pip install 'leaf-distill[vllm]' (or use --backend hf)"
            ) from None
        import torch  # heavy: torch

        self.tokenizer = tokenizer
        self.settings = settings or GenerationSettings()
        self.stop_ids = stop_token_ids(tokenizer)
        self.llm = LLM(model=str(model_path), dtype=dtype, seed=self.settings.seed,
                       tensor_parallel_size=max(1, torch.cuda.device_count()))

    def _sample(self, instructions, prefixes, n: int) -> list[list[Answer]]:
        from vllm import SamplingParams  # optional: vLLM

        s = self.settings
        params = SamplingParams(n=n, temperature=s.temperature, top_p=s.top_p,
                                max_tokens=s.max_new_tokens, stop_token_ids=self.stop_ids,
                                seed=s.seed)
        texts = prompts_for(self.tokenizer, instructions, prefixes)
        # token ids, not text: vLLM would add a second BOS to a template that writes one
        prompts = [{"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]}
                   for t in texts]
        outputs = self.llm.generate(prompts, params, use_tqdm=s.progress)
        # finish_reason "length": the budget ran out; "stop": a stop token or string
        return [[Answer(c.text, truncated=c.finish_reason == "length") for c in o.outputs]
                for o in outputs]


def make_generator(model_path: str, *, backend: str = "hf", dtype: str = "float32",
                   device: str = "auto", settings: GenerationSettings | None = None):
    """Load ``model_path`` and return a generator for the chosen backend."""

    if backend not in BACKENDS:
        raise LeafError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    tokenizer = load_tokenizer(model_path, padding_side="left")
    if backend == "vllm":
        return VLLMGenerator(model_path, tokenizer, settings, dtype=dtype)
    model = load_model(model_path, dtype=dtype, device=device)
    return HFGenerator(model, tokenizer, settings)


def release(generator) -> None:
    """Free a generator's model memory (teacher and student are loaded one after the other)."""
    import gc

    import torch  # heavy: torch

    for attr in ("model", "llm"):
        if hasattr(generator, attr):
            delattr(generator, attr)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
