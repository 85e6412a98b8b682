"""The distillation dataset: original samples and their counterfactuals, one dataset.

Rows come from ``counterfactuals.jsonl`` (written by ``leaf prune``; a plain samples file works
too, every row then being an original). Each row becomes one teacher-forced sequence rendered
through the student's chat template (:func:`leaf.data.templates.encode`):

- original, and instruction-level counterfactual: ``instruction -> response``;
- response-level counterfactual: ``instruction -> prefix + target`` with labels only on
  ``target`` (``target_start = len(prefix)``).

Labels are the token ids from the first target token to the end of turn; everything else is
``-100``. Rows with ``verified: false`` are dropped; ``true`` and ``null`` (not checked) are kept.
Sequences longer than ``max_length`` are cut at ``max_length`` tokens (one warning with the
count); a row left with no label token is dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from leaf.data.jsonl import Records, first_seen, is_path, iter_records
from leaf.data.schema import check_training_row
from leaf.data.templates import encode
from leaf.errors import LeafInputError

logger = logging.getLogger(__name__)

IGNORE = -100


def encode_row(tokenizer, row: dict[str, Any], system: str | None = None) -> tuple[list, list]:
    """``(input_ids, labels)`` for one training row (labels ``-100`` outside the target)."""
    if row.get("level") == "response" and row.get("kind") == "counterfactual":
        prefix, target = row["prefix"], row["target"]
        enc = encode(tokenizer, row["instruction"], prefix + target, len(prefix), system)
    else:
        enc = encode(tokenizer, row["instruction"], row["response"], 0, system)
    labels = [t if m else IGNORE for t, m in zip(enc.input_ids, enc.label_mask())]
    return enc.input_ids, labels


class DistillDataset(torch.utils.data.Dataset):
    """Encoded rows: ``input_ids``, ``labels`` and ``is_counterfactual`` (and ``cache_row``
    once a teacher cache is attached).

    ``ids[i]`` is the row's ``id`` and ``origins[i]`` the id of its original (its own ``id`` for
    an original, ``origin_id`` for a counterfactual, ``None`` when that is missing); the paired
    mixing uses it to put counterfactuals next to their originals (:mod:`leaf.distill.mixing`).
    ``stats`` counts kept, dropped and truncated rows. ``path``
    is a JSONL file, or a list of row dicts (then ``name`` stands for it in messages).
    """

    def __init__(
        self,
        path: Records,
        tokenizer,
        max_length: int | None = None,
        system: str | None = None,
        include_counterfactuals: bool = True,
        name: str = "data",
    ) -> None:
        self.path: Path | str = Path(path) if is_path(path) else name
        self.items: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.origins: list[str | None] = []
        self.stats: Counter = Counter()
        seen: dict[str, tuple] = {}
        for where, line, row in iter_records(self.path if is_path(path) else path, name):
            check_training_row(row, where, line)
            if row["id"] in seen:
                raise LeafInputError(
                    where, line, "id", f"duplicate id {row['id']!r} ({first_seen(*seen[row['id']])})"
                )
            seen[row["id"]] = (where, line)
            is_cf = row.get("kind", "original") == "counterfactual"
            if row.get("verified") is False:
                self.stats["dropped_unverified"] += 1
                continue
            if is_cf and not include_counterfactuals:
                self.stats["dropped_counterfactual"] += 1
                continue
            input_ids, labels = encode_row(tokenizer, row, system)
            if max_length is not None and len(input_ids) > max_length:
                self.stats["truncated"] += 1
                input_ids, labels = input_ids[:max_length], labels[:max_length]
            if all(x == IGNORE for x in labels[1:]):
                self.stats["dropped_no_target"] += 1
                continue
            self.stats["counterfactual" if is_cf else "original"] += 1
            self.items.append(
                {"input_ids": input_ids, "labels": labels, "is_counterfactual": int(is_cf)}
            )
            self.ids.append(row["id"])
            self.origins.append(row.get("origin_id") if is_cf else row["id"])
        if self.stats["truncated"]:
            logger.warning(
                "%s: %d of %d rows are longer than max_length=%d tokens and were truncated "
                "(%d left with no target token were dropped)",
                self.path, self.stats["truncated"], len(seen), max_length,
                self.stats["dropped_no_target"],
            )
        if not self.items:
            raise LeafInputError(self.path, None, None, "no usable training rows")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class DistillCollator:
    """Pad a list of rows to the longest row of the batch (never to ``max_length``).

    Returns ``input_ids``, ``attention_mask``, ``labels`` (``-100`` on padding),
    ``is_counterfactual`` ``[B]`` and, with a teacher cache, ``cache_row`` ``[B]``. Padding is on the right, which
    keeps positions identical to the unpadded sequence.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "is_counterfactual": torch.tensor([r["is_counterfactual"] for r in rows]),
        }
        if "cache_row" in rows[0]:
            batch["cache_row"] = torch.tensor([r["cache_row"] for r in rows])
        return batch
