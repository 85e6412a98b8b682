"""The ``attention`` stage of ``leaf run``: attention paid to the planted distractor.

For testbed data, every student (Pre-KD, then each distilled variant of each seed) is run on
the first ``limit`` samples of one test split (default: the anti-correlated one, where the
distractor points to a wrong answer) and :func:`leaf.evaluate.attention_share.measure` gives the
share of attention its response tokens pay to the planted distractor sentence (``--spans planted``),
per layer and averaged over layers. ``RUN_DIR/attention.json`` has the format of
``leaf attention --out`` (so ``leaf report`` shows it) plus, per model row, ``key`` (the table
row: ``student``, ``kd``, ...), ``group`` (its label: the report's figure averages a group's
runs into one bar), ``member`` (``kd-s0@data0``) and ``seed``; with ``attention.reliance``
(default on), ``reliance``: how often the model's answer follows the distractor when its value is
swapped, and how the log-probability of the correct response moves when it is swapped or
removed (:mod:`leaf.evaluate.reliance`), the causal figure the tables lead with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leaf.data.jsonl import finite_json, iter_jsonl, write_json_atomic
from leaf.errors import LeafError
from leaf.evaluate.attention_share import compare_models, planted_items
from leaf.evaluate.reliance import FIELDS as RELIANCE_FIELDS
from leaf.evaluate.reliance import measure_reliance, reliance_items
from leaf.intervals import mean_ci
from leaf.pipeline.config import LABELS


def measure_run(entries: list[dict[str, Any]], out: Path, *, split: str, part: str,
                limit: int | None, device: str, dtype: str, reliance: bool = False,
                batch_size: int = 64, max_new_tokens: int = 48) -> None:
    """Measure every entry (``key``, ``member``, ``seed``, ``model``, ``data``) and write ``out``.

    Models are loaded once each with eager attention; each is measured on its own replicate's
    split file, so a seed's students all see the same samples. With ``reliance``, each model
    row also gets ``reliance`` (:func:`leaf.evaluate.reliance.measure_reliance` on the same
    split's first ``limit`` anti-correlated items).
    """
    import torch  # heavy: torch loads only when the stage runs

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for e in entries:
        items = planted_items(iter_jsonl(e["data"]), str(e["data"]), part=part)
        if not items:
            raise LeafError(f"{e['data']}: no planted {part} spans to measure attention on")
        items = items[:limit] if limit else items
        group = LABELS.get(e["key"], e["key"])
        dkey = e["member"].rsplit("@", 1)[-1]
        label = group + (f" ({dkey})" if e["seed"] is None else f" (seed {e['seed']})")
        (res,) = compare_models([str(e["model"])], items, [label], device=device, dtype=dtype)
        row = {**res.to_json(), "key": e["key"], "group": group, "member": e["member"],
               "seed": e["seed"]}
        if reliance:
            anti = reliance_items(r for _, r in iter_jsonl(e["data"]))
            anti = anti[:limit] if limit else anti
            if anti:
                row["reliance"] = measure_reliance(str(e["model"]), anti, device=device,
                                                   dtype=dtype, batch_size=batch_size,
                                                   max_new_tokens=max_new_tokens)
        rows.append(row)
    out_obj = {"spans": "planted", "planted_part": part, "split": split,
               "data": f"{split} split, first {limit or 'all'} samples per replicate",
               "models": rows}
    write_json_atomic(out, finite_json(out_obj))


def summarise_attention(att: dict[str, Any]) -> dict[str, Any]:
    """Per table row: mean share over layers and the uniform reference, mean and 95% interval.

    With >= 2 seeds the interval is Student-t over seeds; with one it is Student-t over the
    measured samples' shares (``per_item``).
    """
    groups: dict[str, list[dict]] = {}
    for m in att.get("models", []):
        groups.setdefault(m.get("key") or m["label"], []).append(m)
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = {"key": key, "label": LABELS.get(key, key),
                               "members": [m.get("member") for m in members],
                               "replicates": len(members),
                               "n_items": [m["n_items"] for m in members]}
        for field in ("mean", "uniform"):
            values = [m[field] for m in members if m.get(field) is not None]
            if len(values) >= 2:
                ci, kind = mean_ci(values), "t over seeds"
            else:
                per_item = [p["share" if field == "mean" else "uniform"]
                            for m in members for p in m.get("per_item", [])]
                ci, kind = mean_ci(per_item), "t over samples"
                if values:
                    ci["mean"] = values[0]
            row["share" if field == "mean" else "uniform"] = {
                "mean": ci["mean"], "lo": ci["low"], "hi": ci["high"], "values": values,
                "interval": kind}
        rel = [m["reliance"] for m in members if m.get("reliance")]
        if rel:
            row["reliance"] = {"n_items": [r["n_items"] for r in rel]}
            for field in RELIANCE_FIELDS:
                values = [r[field] for r in rel if r.get(field) is not None]
                if len(values) >= 2:
                    ci, kind = mean_ci(values), "t over seeds"
                else:
                    ci = mean_ci([float(p[field]) for r in rel for p in r.get("per_item", [])])
                    kind = "t over samples"
                row["reliance"][field] = {"mean": ci["mean"], "lo": ci["low"], "hi": ci["high"],
                                          "values": values, "interval": kind}
        n_layers = max((len(m.get("per_layer") or []) for m in members), default=0)
        row["per_layer"] = [
            _nanmean([m["per_layer"][i] for m in members
                      if i < len(m.get("per_layer") or []) and m["per_layer"][i] is not None])
            for i in range(n_layers)]
        rows.append(row)
    return {"split": att.get("split"), "spans": att.get("spans"),
            "planted_part": att.get("planted_part"), "rows": rows}


def _nanmean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None

