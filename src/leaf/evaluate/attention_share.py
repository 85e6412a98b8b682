"""Attention on confounders: how much of its attention a model pays to confounder spans.

For one sample, layer l and head h, with ``A^{l,h}`` the softmax attention matrix
(rows = queries, columns = keys), ``Q`` the response (target) token positions and ``C`` the
token positions that overlap a confounder span::

    share_l = mean_{q in Q} mean_h  sum_{k in C, k <= q} A^{l,h}[q, k]

i.e. the fraction of each response token's attention that lands on the confounder, averaged
over heads and response tokens; ``share = mean_l share_l``. Over a set of samples the per-layer
shares are averaged sample by sample (each sample weighs the same). The paper reports this
falling after LeaF: the student looks less at what it should ignore.

``uniform`` is the same quantity for an attention that is uniform over the causal context,
``mean_q |{k in C : k <= q}| / (q + 1)``: the share a model with no preference would show.

Spans come from the testbed (``planted``: known distractors) or from ``leaf prune`` (``pruned``:
detected ones); they are character spans in the original instruction or response and are mapped
to tokens through :func:`leaf.data.templates.encode` offsets, per model, so models with different
tokenizers are compared on the same text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from leaf.data.templates import encode
from leaf.errors import LeafInputError
from leaf.models import load_causal_lm, load_tokenizer


@dataclass
class SpanItem:
    """One measurement: a text pair, where the response target starts, and confounder spans."""

    id: str
    instruction: str
    response: str
    field: str  # "instruction" | "response": the field the spans are in
    spans: list[tuple[int, int]]
    target_start: int = 0  # character in ``response`` where the attending (query) tokens begin


def confounder_share(
    attentions: Sequence[Any], query_mask: Sequence[bool], key_mask: Sequence[bool]
) -> np.ndarray:
    """Per-layer ``share_l`` for one sample (see the module docstring).

    ``attentions``: one tensor or array per layer, shaped ``[heads, T, T]`` or ``[1, heads, T, T]``
    (as returned by ``output_attentions=True``). ``query_mask``/``key_mask``: length ``T``.
    Returns an array of length ``n_layers``; NaN when the sample has no query token.
    """
    q = np.asarray(query_mask, dtype=bool)
    k = np.asarray(key_mask, dtype=bool)
    out = np.full(len(attentions), np.nan)
    if not q.any():
        return out
    for layer, att in enumerate(attentions):
        a = att.detach().float().cpu().numpy() if hasattr(att, "detach") else np.asarray(att)
        if a.ndim == 4:
            a = a[0]
        # [H, T, T] -> [H, |Q|]: attention mass each query puts on confounder keys
        mass = a[:, q][:, :, k].sum(axis=-1)
        out[layer] = float(mass.mean())
    return out


def uniform_share(query_mask: Sequence[bool], key_mask: Sequence[bool]) -> float:
    """Share a uniform causal attention would give the confounder: ``mean_q |C<=q| / (q+1)``."""
    q = np.asarray(query_mask, dtype=bool)
    k = np.asarray(key_mask, dtype=np.float64)
    if not q.any():
        return float("nan")
    seen = np.cumsum(k) / np.arange(1, len(k) + 1)
    return float(seen[q].mean())


def token_masks(tokenizer, item: SpanItem) -> tuple[list[int], list[bool], list[bool]]:
    """``(input_ids, query_mask, key_mask)`` for ``item`` under ``tokenizer``'s chat template.

    Queries are the labelled tokens (the response from ``target_start``, end-of-turn included);
    keys are the context tokens of ``item.field`` that overlap any confounder span.
    """
    enc = encode(tokenizer, item.instruction, item.response, target_start=item.target_start)
    query = enc.label_mask()
    key = [False] * len(enc.input_ids)
    limit = item.target_start if item.field == "response" else None
    for tok, start, end in enc.units(item.field, limit):
        if any(start < b and end > a for a, b in item.spans):
            key[tok] = True
    return enc.input_ids, query, key


def _span_list(value: Any, path: str, line: int | None, name: str) -> list[tuple[int, int]]:
    if not isinstance(value, list):
        raise LeafInputError(path, line, name, "expected a list of [start, end) spans")
    spans = []
    for s in value:
        if isinstance(s, dict):
            s = [s.get("start"), s.get("end")]
        if (not isinstance(s, list | tuple) or len(s) != 2
                or not all(isinstance(x, int) for x in s) or s[0] > s[1]):
            raise LeafInputError(path, line, name, f"bad span {s!r}: expected [start, end)")
        spans.append((int(s[0]), int(s[1])))
    return spans


def planted_items(
    rows: Iterable[tuple[int, dict]], path: str, part: str = "distractor"
) -> list[SpanItem]:
    """Items from samples with a ``planted`` field (testbed).

    ``planted`` is the testbed's ``{"misleading": [...], "distractor": [...]}`` (instruction
    spans; ``part`` picks which), or a list of ``[start, end)`` instruction spans (or objects
    ``{"start", "end", "field"}``), or ``{"instruction": [...], "response": [...]}``.
    Response spans are measured with the response after them as target: from
    ``planted_target_start`` when given, else from the end of the last response span.
    """
    items = []
    for line, row in rows:
        if "planted" not in row:
            continue
        planted = row["planted"]
        by_field: dict[str, list] = {"instruction": [], "response": []}
        if isinstance(planted, dict) and ("misleading" in planted or "distractor" in planted):
            by_field["instruction"] = _span_list(planted.get(part) or [], path, line,
                                                 f"planted.{part}")
        elif isinstance(planted, dict):
            for f in by_field:
                by_field[f] = _span_list(planted.get(f, []), path, line, f"planted.{f}")
        elif isinstance(planted, list):
            for s in planted:
                f = s.get("field", "instruction") if isinstance(s, dict) else "instruction"
                if f not in by_field:
                    raise LeafInputError(path, line, "planted", f"unknown field {f!r}")
                by_field[f].append(s)
            by_field = {f: _span_list(v, path, line, "planted") for f, v in by_field.items()}
        else:
            raise LeafInputError(path, line, "planted", "expected a list or an object of spans")
        for f, spans in by_field.items():
            if not spans:
                continue
            target = 0
            if f == "response":
                target = int(row.get("planted_target_start", max(b for _, b in spans)))
            items.append(SpanItem(str(row["id"]), row["instruction"], row["response"], f, spans,
                                  target))
    return items


def pruned_items(
    rows: Iterable[tuple[int, dict]], path: str, verified_only: bool = False
) -> list[SpanItem]:
    """Items from a counterfactuals file: one per original and (level, segment), spans united.

    The original text comes from the ``kind: original`` row; instruction-level spans are
    measured with the whole response as queries, response-level ones with the row's ``target``
    (``prefix_end = len(response) - len(target)``) as queries.
    """
    originals: dict[str, dict] = {}
    groups: dict[tuple[str, str, int], list[tuple[int, int]]] = {}
    lines: dict[tuple[str, str, int], int] = {}
    for line, row in rows:
        origin = str(row.get("origin_id", row.get("id")))
        if row.get("kind") == "original":
            originals[origin] = row
            continue
        if row.get("kind") != "counterfactual":
            raise LeafInputError(path, line, "kind", "expected 'original' or 'counterfactual'")
        if verified_only and row.get("verified") is not True:
            continue
        level = row.get("level")
        if level == "instruction":
            key = (origin, "instruction", 0)
        elif level == "response":
            target = row.get("target")
            if not isinstance(target, str):
                raise LeafInputError(path, line, "target", "response-level rows need 'target'")
            key = (origin, "response", len(target))
        else:
            raise LeafInputError(path, line, "level", "expected 'instruction' or 'response'")
        groups.setdefault(key, []).extend(_span_list(row.get("pruned"), path, line, "pruned"))
        lines.setdefault(key, line)
    items = []
    for (origin, level, target_len), spans in groups.items():
        if origin not in originals:
            raise LeafInputError(path, lines[(origin, level, target_len)], "origin_id",
                                 f"no 'original' row for {origin!r}")
        orig = originals[origin]
        response = orig.get("response", "")
        target = 0 if level == "instruction" else len(response) - target_len
        items.append(SpanItem(origin, orig["instruction"], response, level,
                              sorted(set(spans)), target))
    return items


@dataclass
class AttentionResult:
    """Per-layer confounder shares of one model over a set of items."""

    model: str
    label: str
    per_layer: list[float]
    mean: float
    uniform: float
    n_items: int
    per_item: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "label": self.label, "per_layer": self.per_layer,
                "mean": self.mean, "uniform": self.uniform, "n_items": self.n_items,
                "per_item": self.per_item}


def measure(model, tokenizer, items: Sequence[SpanItem], *, label: str = "", name: str = "",
            device: str = "cpu", progress: bool = False) -> AttentionResult:
    """Run ``model`` (eager attention) on every item and average the confounder shares."""
    import torch  # heavy: torch loads only when a model is measured
    from tqdm import tqdm  # heavy: tqdm

    shares, uniforms, per_item = [], [], []
    model.eval()
    for item in tqdm(items, desc=f"attention {label or name}", disable=not progress):
        ids, query, key = token_masks(tokenizer, item)
        if not any(key) or not any(query):
            continue
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids], device=device), output_attentions=True)
        if not out.attentions or out.attentions[0] is None:
            raise RuntimeError("the model returned no attentions; load it with "
                               "attn_implementation='eager'")
        s = confounder_share(out.attentions, query, key)
        u = uniform_share(query, key)
        shares.append(s)
        uniforms.append(u)
        per_item.append({"id": item.id, "field": item.field, "target_start": item.target_start,
                         "share": float(np.mean(s)), "uniform": u,
                         "n_confounder_tokens": int(sum(key))})
    if shares:
        per_layer = np.mean(np.stack(shares), axis=0)
        mean, uniform = float(per_layer.mean()), float(np.mean(uniforms))
    else:
        per_layer, mean, uniform = np.array([]), float("nan"), float("nan")
    return AttentionResult(name, label or name, [float(x) for x in per_layer], mean, uniform,
                           len(shares), per_item)


def compare_models(
    models: Sequence[str], items: Sequence[SpanItem], labels: Sequence[str] | None = None, *,
    device: str = "cpu", dtype: str = "float32", progress: bool = False,
) -> list[AttentionResult]:
    """Load each model (directory or hub id) with eager attention and :func:`measure` it."""
    import torch  # heavy: torch

    labels = list(labels) if labels else [str(m).rstrip("/").split("/")[-1] for m in models]
    results = []
    for path, label in zip(models, labels, strict=True):
        tok = load_tokenizer(path, padding_side=None)
        model = load_causal_lm(path, dtype=getattr(torch, dtype),
                               attn_implementation="eager").to(device)
        results.append(measure(model, tok, items, label=label, name=str(path), device=device,
                               progress=progress))
        del model
    return results


def format_table(results: Sequence[AttentionResult]) -> str:
    """A small text table: one row per model, mean and per-layer shares in percent."""
    n_layers = max((len(r.per_layer) for r in results), default=0)
    show = list(range(n_layers)) if n_layers <= 8 else [0, 1, n_layers // 2, n_layers - 2,
                                                        n_layers - 1]
    head = ["model", "items", "mean %", "uniform %"] + [f"L{i}" for i in show]
    rows = [head]
    for r in results:
        cells = [r.label, str(r.n_items), f"{100 * r.mean:.2f}", f"{100 * r.uniform:.2f}"]
        cells += [f"{100 * r.per_layer[i]:.2f}" if i < len(r.per_layer) else "" for i in show]
        rows.append(cells)
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
