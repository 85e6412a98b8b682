"""Attention on confounders: checked against an independent recomputation on a tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import write_jsonl
from leaf.cli import main
from leaf.evaluate.attention_share import (
    SpanItem,
    confounder_share,
    measure,
    planted_items,
    pruned_items,
    uniform_share,
)

INSTRUCTION = "Natalia sold 48 clips in April. A hint: the answer is 15. How many clips in May?"
HINT = "A hint: the answer is 15."
RESPONSE = "Step 1: 48 / 2 = 24.\nThe answer is 24."


def test_share_formula_on_a_hand_made_tensor():
    # 2 heads, 4 tokens; queries = tokens 2, 3; confounder = token 1
    a = np.zeros((2, 4, 4))
    a[0, 2] = [0.5, 0.25, 0.25, 0.0]
    a[1, 2] = [0.0, 1.0, 0.0, 0.0]
    a[0, 3] = [0.25, 0.25, 0.25, 0.25]
    a[1, 3] = [0.0, 0.0, 0.0, 1.0]
    share = confounder_share([a, a[None]], [False, False, True, True],
                             [False, True, False, False])
    expected = np.mean([0.25, 1.0, 0.25, 0.0])
    assert share == pytest.approx([expected, expected])
    assert uniform_share([False, False, True, True], [False, True, False, False]) == \
        pytest.approx((1 / 3 + 1 / 4) / 2)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _manual_attention(model, input_ids):
    """Softmax(QK^T / sqrt(d)) per layer from the layers' inputs, without output_attentions."""
    captured = []

    def grab(module, args, kwargs):
        captured.append((kwargs.get("hidden_states", args[0] if args else None),
                         kwargs["position_embeddings"]))

    handles = [layer.self_attn.register_forward_pre_hook(grab, with_kwargs=True)
               for layer in model.model.layers]
    with torch.no_grad():
        model(input_ids=input_ids)
    for h in handles:
        h.remove()
    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    d = cfg.hidden_size // n_heads
    out = []
    for layer, (hidden, (cos, sin)) in zip(model.model.layers, captured):
        att = layer.self_attn
        t = hidden.shape[1]
        with torch.no_grad():
            q = att.q_proj(hidden).view(1, t, n_heads, d).transpose(1, 2)
            k = att.k_proj(hidden).view(1, t, n_kv, d).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k = k.repeat_interleave(n_heads // n_kv, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        out.append(torch.softmax(scores, dim=-1)[0])
    return out


def test_measure_matches_independent_recomputation(tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager")
    with torch.no_grad():  # sharpen the random init's near-uniform attention
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(60.0)
    a = INSTRUCTION.index(HINT)
    item = SpanItem("x", INSTRUCTION, RESPONSE, "instruction", [(a, a + len(HINT))])
    result = measure(model, tok, [item])

    # Token positions found independently: render the chat text, tokenise with offsets.
    prompt = tok.apply_chat_template([{"role": "user", "content": INSTRUCTION}], tokenize=False,
                                     add_generation_prompt=True)
    text = prompt + RESPONSE + "<|eot_id|>"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    base = prompt.index(INSTRUCTION) + a
    keys = [i for i, (s, e) in enumerate(enc["offset_mapping"])
            if s < base + len(HINT) and e > base]
    queries = [i for i, (_, e) in enumerate(enc["offset_mapping"]) if e > len(prompt)]
    assert keys and queries

    manual = _manual_attention(model, torch.tensor([enc["input_ids"]]))
    with torch.no_grad():
        returned = model(input_ids=torch.tensor([enc["input_ids"]]),
                         output_attentions=True).attentions
    expected = []
    for att, ret in zip(manual, returned):
        assert torch.allclose(att, ret[0], atol=1e-5)  # the recomputation is faithful
        per_head = [sum(float(att[h, q, k]) for k in keys) for h in range(att.shape[0])
                    for q in queries]
        expected.append(np.mean(per_head))
    assert result.n_items == 1
    assert result.per_layer == pytest.approx(expected, abs=1e-6)
    assert result.mean == pytest.approx(np.mean(expected), abs=1e-6)
    assert result.per_item[0]["n_confounder_tokens"] == len(keys)
    assert abs(result.mean - result.uniform) > 1e-3  # the check is not a uniform tautology


def test_span_sources(tmp_path):
    rows = [(1, {"id": "a", "instruction": INSTRUCTION, "response": RESPONSE,
                 "planted": [[32, 57]]}),
            (2, {"id": "b", "instruction": "x", "response": "y"}),
            (3, {"id": "c", "instruction": INSTRUCTION, "response": RESPONSE,
                 "planted": {"response": [[0, 7]]}})]
    rows.append((4, {"id": "d", "instruction": INSTRUCTION, "response": RESPONSE,
                     "planted": {"misleading": [[54, 56]], "distractor": [[32, 57]]}}))
    items = planted_items(rows, "p.jsonl")
    assert [(i.id, i.field, i.spans, i.target_start) for i in items] == [
        ("a", "instruction", [(32, 57)], 0), ("c", "response", [(0, 7)], 7),
        ("d", "instruction", [(32, 57)], 0)]
    assert planted_items(rows, "p.jsonl", part="misleading")[-1].spans == [(54, 56)]

    orig = {"id": "a", "instruction": INSTRUCTION, "response": RESPONSE, "origin_id": "a",
            "kind": "original", "level": "instruction", "pruned": [], "verified": None}
    cf_rows = [orig,
               {**orig, "id": "a#i0", "kind": "counterfactual", "pruned": [[32, 40]],
                "verified": True},
               {**orig, "id": "a#i1", "kind": "counterfactual", "pruned": [[41, 57]],
                "verified": False},
               {**orig, "id": "a#r1.0", "kind": "counterfactual", "level": "response",
                "pruned": [[0, 6]], "verified": True, "prefix": "1: 48 / 2 = 24.",
                "target": RESPONSE[20:]}]
    items = pruned_items(enumerate(cf_rows, 1), "cf.jsonl")
    by_field = {i.field: i for i in items}
    assert by_field["instruction"].spans == [(32, 40), (41, 57)]
    assert by_field["response"].target_start == 20
    items = pruned_items(enumerate(cf_rows, 1), "cf.jsonl", verified_only=True)
    assert {i.field: i.spans for i in items}["instruction"] == [(32, 40)]


def test_cli_compares_models(tmp_path, tiny_llama_dir, tiny_qwen_dir, capsys):
    a = INSTRUCTION.index(HINT)
    data = write_jsonl(tmp_path / "planted.jsonl", [
        {"id": "a", "task": "math", "instruction": INSTRUCTION, "response": RESPONSE,
         "planted": [[a, a + len(HINT)]]}])
    out = tmp_path / "attention.json"
    rc = main(["attention", "--model", str(tiny_llama_dir), "--compare", str(tiny_qwen_dir),
               "--labels", "KD", "LeaF", "--data", str(data), "--spans", "planted",
               "--out", str(out), "--device", "cpu"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [m["label"] for m in res["models"]] == ["KD", "LeaF"]
    for m in res["models"]:
        assert len(m["per_layer"]) == 2 and m["n_items"] == 1
        assert 0 < m["mean"] < 1 and m["mean"] == pytest.approx(np.mean(m["per_layer"]))
    table = capsys.readouterr().out
    assert "KD" in table and "LeaF" in table and "mean %" in table
