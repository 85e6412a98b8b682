"""Inputs longer than a model can read, found before they are tokenised in full.

A text of ``c`` characters needs at least ``c / w`` tokens, where ``w`` is the longest
vocabulary entry in characters (byte-level entries spell each byte as one character, so ``w``
bounds the characters one token covers). A text longer than ``max_tokens * w`` characters is
therefore too long without tokenising it; shorter ones are tokenised once to count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leaf.errors import LeafError


def context_length(model: str | Path) -> int | None:
    """``max_position_embeddings`` of a model directory's config.json (None when unknown)."""
    import json

    cfg = Path(str(model)) / "config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    data = data.get("text_config", data) if isinstance(data, dict) else {}
    n = data.get("max_position_embeddings") if isinstance(data, dict) else None
    return n if isinstance(n, int) and n > 0 else None


def longest_token_chars(tokenizer) -> int:
    """The most characters one token of ``tokenizer`` can stand for (at least 1)."""
    return max((len(t) for t in tokenizer.get_vocab()), default=1) or 1


def too_long(samples: Sequence[dict[str, Any]], tokenizer, max_tokens: int,
             fields: Sequence[str] = ("instruction", "response")
             ) -> list[tuple[dict[str, Any], int, int | None]]:
    """``(sample, characters, tokens)`` for each sample whose ``fields`` together exceed
    ``max_tokens`` tokens; ``tokens`` is None when the characters alone prove it."""
    bound = max_tokens * longest_token_chars(tokenizer)
    found = []
    for s in samples:
        texts = [s[f] for f in fields if isinstance(s.get(f), str)]
        chars = sum(len(t) for t in texts)
        if chars > bound:
            found.append((s, chars, None))
            continue
        if chars <= max_tokens:  # a token covers at least one character
            continue
        tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        if tokens > max_tokens:
            found.append((s, chars, tokens))
    return found


def refuse_too_long(samples: Sequence[dict[str, Any]], tokenizer, max_tokens: int,
                    source: Any, why: str,
                    fields: Sequence[str] = ("instruction", "response"), limit: int = 10) -> None:
    """Raise one :class:`LeafError` naming every sample (up to ``limit``) longer than
    ``max_tokens``; ``why`` says where the limit comes from."""
    found = too_long(samples, tokenizer, max_tokens, fields)
    if not found:
        return
    where = source if isinstance(source, str | Path) else "data"
    lines = [f"{where}: {len(found)} sample(s) longer than {max_tokens} tokens ({why}); "
             "shorten or drop them:"]
    for s, chars, tokens in found[:limit]:
        size = f"{tokens} tokens" if tokens is not None else f"{chars} characters, more than " \
               f"{max_tokens} tokens can hold"
        lines.append(f"  id {s['id']!r}: {' + '.join(fields)} is {size}")
    if len(found) > limit:
        lines.append(f"  and {len(found) - limit} more")
    raise LeafError("\n".join(lines))
