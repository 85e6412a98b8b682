"""Render a sample through a tokenizer's chat template and map tokens to character spans.

Nothing here knows a model's token ids or header lengths. The instruction and the response are
located in the rendered text by rendering the template around sentinel strings, and every token
is mapped back through the fast tokenizer's ``offset_mapping``.

Layout of the rendered text::

    prompt = template(user=instruction, add_generation_prompt=True)
    text   = prompt + response + end_of_turn

``end_of_turn`` is whatever the template writes after an assistant message (``<|eot_id|>``,
``<|im_end|>\\n``, ...). The response is inserted verbatim (a template that trims it would shift
offsets), so generation from ``prompt`` and teacher forcing on ``text`` see the same prefix.
Labels cover every token from ``target_start`` (the response, or its target part for
response-level samples) to the end, end-of-turn included, so a model learns to stop.

Tokenizers without a chat template use the plain layout
``"### Instruction:\\n{instruction}\\n\\n### Response:\\n{response}{eos}"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from leaf.errors import LeafError

_SENTINEL_USER = "\u2063LEAF-USER-SENTINEL\u2063"
_SENTINEL_ASSISTANT = "\u2063LEAF-ASSISTANT-SENTINEL\u2063"
PLAIN_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"


@dataclass
class ChatLayout:
    """The pieces of the rendered text around the instruction and the response."""

    head: str  # text before the instruction
    instruction: str  # the instruction as the template writes it
    tail: str  # text between the instruction and the response (generation prompt)
    end_of_turn: str  # text after the response

    @property
    def prompt(self) -> str:
        return self.head + self.instruction + self.tail


@dataclass
class Encoded:
    """A rendered, tokenised sample with character offsets."""

    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]  # per token, [start, end) in ``text``
    instruction_span: tuple[int, int]  # where the instruction sits in ``text``
    response_span: tuple[int, int]  # where the assistant content (prefix + target) sits
    target_start: int  # first character of ``text`` that is a label
    instruction_shift: int = 0  # chars of the original instruction dropped before it (trim)
    extra: dict = field(default_factory=dict)

    def label_mask(self) -> list[bool]:
        """True for tokens that are predicted (end after ``target_start``)."""
        return [end > self.target_start for _, end in self.offsets]

    def units(self, field_name: str, limit: int | None = None) -> list[tuple[int, int, int]]:
        """``(token_index, start, end)`` for tokens inside a field, spans relative to the field.

        ``field_name`` is ``"instruction"`` or ``"response"``; for the response only the part
        before ``limit`` characters (the prefix) is returned. Tokens that are also labels are
        never returned, so a scored token is always context, never target.
        """
        if field_name == "instruction":
            lo, hi = self.instruction_span
            shift = self.instruction_shift
        elif field_name == "response":
            lo, hi = self.response_span
            shift = 0
            if limit is not None:
                hi = min(hi, lo + limit)
        else:
            raise ValueError(f"unknown field {field_name!r}")
        hi = min(hi, self.target_start) if field_name == "response" else hi
        out = []
        for i, (s, e) in enumerate(self.offsets):
            if e <= lo or s >= hi or e <= s or e > self.target_start:
                continue
            out.append((i, max(s, lo) - lo + shift, min(e, hi) - lo + shift))
        return out


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def chat_layout(tokenizer, instruction: str, system: str | None = None) -> ChatLayout:
    """Find where the template puts the instruction and the response."""
    if not getattr(tokenizer, "chat_template", None):
        head, tail = PLAIN_PROMPT.split("{instruction}")
        return ChatLayout(head, instruction, tail, tokenizer.eos_token or "")
    base = [{"role": "system", "content": system}] if system else []

    user = base + [{"role": "user", "content": _SENTINEL_USER}]
    rendered = _render(tokenizer, user, True)
    if rendered.count(_SENTINEL_USER) != 1:
        raise LeafError("the chat template does not write the user message exactly once")
    head, tail = rendered.split(_SENTINEL_USER)
    prompt = _render(tokenizer, base + [{"role": "user", "content": instruction}], True)
    written = prompt[len(head) : len(prompt) - len(tail)] if prompt.startswith(head) else None
    if written is None or not prompt.endswith(tail) or written not in (
        instruction,
        instruction.strip(),
    ):
        raise LeafError(
            "the chat template changes the instruction text beyond trimming whitespace; "
            "leaf cannot locate instruction tokens"
        )

    full = _render(
        tokenizer, user[:-1] + [{"role": "user", "content": instruction},
                                {"role": "assistant", "content": _SENTINEL_ASSISTANT}], False
    )
    if full.count(_SENTINEL_ASSISTANT) != 1:
        raise LeafError("the chat template does not write the assistant message exactly once")
    end_of_turn = full.split(_SENTINEL_ASSISTANT)[1]
    return ChatLayout(head, written, tail, end_of_turn)


def encode(
    tokenizer,
    instruction: str,
    response: str,
    target_start: int = 0,
    system: str | None = None,
    add_end_of_turn: bool = True,
) -> Encoded:
    """Render and tokenise ``instruction`` -> ``response``.

    ``target_start`` is the character in ``response`` where labels begin (0: the whole
    response; ``len(prefix)`` for a response-level sample ``prefix + target``).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise LeafError("leaf needs a fast (Rust) tokenizer for offset mappings")
    layout = chat_layout(tokenizer, instruction, system)
    prompt = layout.prompt
    text = prompt + response + (layout.end_of_turn if add_end_of_turn else "")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    i0 = len(layout.head)
    shift = instruction.find(layout.instruction) if layout.instruction != instruction else 0
    return Encoded(
        text=text,
        input_ids=list(enc["input_ids"]),
        offsets=[tuple(o) for o in enc["offset_mapping"]],
        instruction_span=(i0, i0 + len(layout.instruction)),
        response_span=(len(prompt), len(prompt) + len(response)),
        target_start=len(prompt) + target_start,
        instruction_shift=shift,
    )


def prompt_text(tokenizer, instruction: str, system: str | None = None) -> str:
    """The text a model continues when it answers ``instruction``."""
    return chat_layout(tokenizer, instruction, system).prompt
