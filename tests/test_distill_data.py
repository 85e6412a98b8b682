"""The distillation dataset and collator on a real tiny tokenizer."""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import write_jsonl
from distill_rows import training_rows
from leaf.distill.data import DistillCollator, DistillDataset
from leaf.errors import LeafInputError


def test_dataset_rows_labels_and_filtering(tmp_path, llama_tok):
    path = write_jsonl(tmp_path / "cf.jsonl", training_rows(4))
    ds = DistillDataset(path, llama_tok, max_length=512)
    # 4 originals + 4 instruction-level + 2 verified response-level (2 have verified: false)
    assert len(ds) == 10 and ds.stats["dropped_unverified"] == 2
    assert ds.stats["original"] == 4 and ds.stats["counterfactual"] == 6
    by_id = dict(zip(ds.ids, ds.items))
    assert by_id["s0"]["is_counterfactual"] == 0 and by_id["s0#i0"]["is_counterfactual"] == 1
    eot = llama_tok.eos_token

    def target_text(item):
        return llama_tok.decode([t for t in item["labels"] if t != -100])

    rows = {r["id"]: r for r in training_rows(4)}
    assert target_text(by_id["s0"]) == rows["s0"]["response"] + eot
    assert target_text(by_id["s0#i0"]) == rows["s0"]["response"] + eot
    # the pruned instruction is what the model reads
    assert "hint" not in llama_tok.decode(by_id["s0#i0"]["input_ids"])
    # response level: labels only on the target; the pruned prefix is context
    item = by_id["s0#r1.0"]
    assert target_text(item) == rows["s0#r1.0"]["target"] + eot
    assert rows["s0#r1.0"]["prefix"] in llama_tok.decode(item["input_ids"])

    no_cf = DistillDataset(path, llama_tok, include_counterfactuals=False)
    assert len(no_cf) == 4 and not any(x["is_counterfactual"] for x in no_cf.items)


def test_truncation_warns_once_with_count(tmp_path, llama_tok, caplog):
    path = write_jsonl(tmp_path / "cf.jsonl", training_rows(2, unverified=False))
    full = DistillDataset(path, llama_tok)
    limit = sorted(len(x["input_ids"]) for x in full.items)[2]
    n_long = sum(len(x["input_ids"]) > limit for x in full.items)
    with caplog.at_level(logging.WARNING):
        ds = DistillDataset(path, llama_tok, max_length=limit)
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and f"{n_long} of 6 rows" in warnings[0].getMessage()
    assert max(len(x["input_ids"]) for x in ds.items) <= limit


def test_collator_pads_dynamically(tmp_path, llama_tok):
    path = write_jsonl(tmp_path / "cf.jsonl", training_rows(2))
    ds = DistillDataset(path, llama_tok, max_length=4096)
    batch = DistillCollator(llama_tok.pad_token_id)([ds[0], ds[1], ds[2]])
    lengths = [len(ds[i]["input_ids"]) for i in range(3)]
    assert batch["input_ids"].shape == (3, max(lengths))  # never padded to max_length
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["is_counterfactual"].tolist() == [ds[i]["is_counterfactual"] for i in range(3)]
    short = lengths.index(min(lengths))
    assert (batch["labels"][short, min(lengths):] == -100).all()
    assert torch.equal(batch["input_ids"][short, : lengths[short]],
                       torch.tensor(ds[short]["input_ids"]))


def test_bad_row_names_file_line_and_field(tmp_path, llama_tok):
    rows = training_rows(1)
    rows[2] = {**rows[2], "target": None}
    path = write_jsonl(tmp_path / "cf.jsonl", rows)
    with pytest.raises(LeafInputError, match=r"cf.jsonl:3: field 'target'"):
        DistillDataset(path, llama_tok)
