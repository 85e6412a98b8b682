"""Make a student from a teacher: fewer decoder layers, coarser weights, or both.

A student made this way shares the teacher's architecture and tokenizer (logit distillation
needs the same vocabulary) and is a weaker model: what LeaF needs, a student right on some
problems and wrong on others. Used by :func:`leaf.stages.make_student`.

- :func:`layers_to_keep` picks the decoder layers to keep (every k-th, or the first and last N);
  :func:`drop_layers` keeps them and renumbers them, config included.
- :func:`fake_quantise` rounds a weight matrix to signed ``bits``-bit integers with one absmax
  scale per group of consecutive inputs (round to nearest, symmetric) and returns it dequantised:
  each weight moves by at most half its group's step, ``absmax / (2 ** (bits - 1) - 1) / 2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from leaf.errors import LeafError


def layers_to_keep(n_layers: int, every: int | None = None, first: int | None = None,
                   last: int | None = None) -> list[int]:
    """The indices of the decoder layers to keep, ascending: ``every=k`` keeps layers 0, k,
    2k, ...; ``first``/``last`` keep the first and/or the last N (together: both ends); none
    of them keeps every layer. Never empty."""
    if every is not None and (first is not None or last is not None):
        raise LeafError("keep every k-th layer or the first/last N layers, not both")
    if every is not None:
        keep = list(range(0, n_layers, every))
    elif first is not None or last is not None:
        keep = sorted(set(range(min(first or 0, n_layers)))
                      | set(range(max(n_layers - (last or 0), 0), n_layers)))
    else:
        keep = list(range(n_layers))
    if not keep:
        raise LeafError(f"this keeps none of the teacher's {n_layers} decoder layers")
    return keep


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's list of decoder layers (``model.model.layers`` in Llama, Qwen2, Mistral ...)."""
    base = getattr(model, "base_model", model)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise LeafError(f"cannot find the decoder layers of this {type(model).__name__} "
                        "(expected model.model.layers)")
    return layers


def drop_layers(model, keep: Sequence[int]) -> None:
    """Keep only the decoder layers ``keep`` (in place): the layers renumbered 0..len-1 (their
    attention's ``layer_idx`` indexes the KV cache), ``num_hidden_layers`` and the per-layer
    lists of the config (``layer_types``) cut to match."""
    layers = decoder_layers(model)
    n = len(layers)
    if not keep or any(not 0 <= i < n for i in keep):
        raise LeafError(f"layers {list(keep)} are not all among the model's {n}")
    kept = torch.nn.ModuleList([layers[i] for i in keep])
    for new, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    getattr(model, "base_model", model).layers = kept
    config = model.config
    for key, value in list(vars(config).items()):
        if isinstance(value, list) and len(value) == n and key != "architectures":
            setattr(config, key, [value[i] for i in keep])
    config.num_hidden_layers = len(kept)


def fake_quantise(weight: torch.Tensor, bits: int, group: int = 0) -> torch.Tensor:
    """``weight`` (outputs x inputs) rounded to signed ``bits``-bit integers, one absmax scale
    per ``group`` consecutive inputs of a row (0: one per row), returned dequantised in its
    dtype."""
    rows, cols = weight.shape
    group = group or cols
    if cols % group:
        raise LeafError(f"a group of {group} inputs does not divide a matrix of {cols} inputs")
    w = weight.float().reshape(rows, cols // group, group)
    top = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / top
    q = torch.clamp(torch.round(w / scale), -top - 1, top)
    return (q * scale).reshape(rows, cols).to(weight.dtype)


def quantise_layers(model, bits: int, group: int = 0) -> int:
    """Fake-quantise every linear weight of the decoder layers in place (attention and MLP
    projections; embeddings, norms and the output layer are kept); return how many."""
    n = 0
    with torch.no_grad():
        for name, module in decoder_layers(model).named_modules():
            if isinstance(module, torch.nn.Linear):
                try:
                    module.weight.copy_(fake_quantise(module.weight, bits, group))
                except LeafError as exc:
                    raise LeafError(f"layers.{name}: {exc}; choose a group that divides it "
                                    "(0: one scale per row)") from None
                n += 1
    return n
