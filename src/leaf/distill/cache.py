"""An offline cache of the teacher's top-k logits, so training never runs the teacher.

``leaf teacher-cache`` renders every training row exactly as ``leaf distill`` does (same
tokenizer, chat template, ``max_length`` and system prompt), runs the teacher once, and keeps,
for each target position, the K largest teacher logits and their ids. At training time the
teacher distribution is approximated by the softmax of those K logits (renormalised top-k;
zero elsewhere) and compared with the student's full-vocabulary distribution
(:func:`leaf.distill.losses.chunked_sparse_divergence`). Forward KL and JSD are supported;
reverse KL is not (the approximated teacher is zero off its top-k). With K equal to the
vocabulary size the cache reproduces the online loss.

Layout of the cache directory::

    meta.json                 {"format", "teacher", "top_k", "vocab_size", "rows"}
    index.jsonl               one row per training row: {"id", "shard", "start", "length", "hash"}
    shard-00000.safetensors   "indices" int32 [positions, K], "logits" [positions, K]

``hash`` fingerprints the row's token ids: training refuses a cache built from a different
rendering. Writing is resumable and data-parallel: shards are written atomically and
``index.jsonl`` by the row driver (:mod:`leaf.data.rowjob`), a shard file's rows at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from leaf import distributed
from leaf.data.jsonl import read_jsonl, write_json_atomic
from leaf.data.rowjob import RowJob, Work, on_one_process
from leaf.distill.data import DistillCollator, DistillDataset
from leaf.distill.losses import chunked_sparse_divergence
from leaf.distill.objective import target_groups
from leaf.errors import LeafError

FORMAT = "leaf-teacher-cache/1"


def ids_hash(input_ids: list[int]) -> str:
    """A short fingerprint of a token-id sequence."""
    data = torch.tensor(input_ids, dtype=torch.int64).numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:16]


def write_teacher_cache(
    teacher,
    tokenizer,
    dataset: DistillDataset,
    out: str | Path,
    top_k: int,
    *,
    teacher_name: str = "",
    vocab_size: int | None = None,
    batch_size: int = 4,
    shard_rows: int = 256,
    progress: bool = True,
) -> Path:
    """Run ``teacher`` over ``dataset`` and write the top-k cache to ``out`` (resumable).

    ``vocab_size``: the student's logit width; the teacher's extra logits are dropped before
    taking the top k, as in online distillation.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = teacher.get_input_embeddings().weight.device
    vocab = vocab_size or teacher.get_output_embeddings().weight.shape[0]
    meta = {"format": FORMAT, "teacher": teacher_name, "top_k": int(top_k),
            "vocab_size": int(vocab), "rows": len(dataset)}
    meta_path = out / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in ("format", "top_k", "vocab_size")} != {
            k: meta[k] for k in ("format", "top_k", "vocab_size")
        }:
            raise LeafError(f"{out} holds a different cache ({old}); choose another --out")
    on_one_process(lambda: write_json_atomic(meta_path, meta))
    collate = DistillCollator(tokenizer.pad_token_id)
    teacher.eval()

    def top_k_shards(work: Work[int]) -> Iterator[list[dict]]:
        """One shard file per unit of rows, numbered after the shards already there."""
        first = 1 + max((r["shard"] for r in work.kept), default=-1)
        bar = distributed.progress(len(work.items), "teacher top-k", unit="row",
                                   disable=not progress)
        for j, unit in work.units:
            shard = first + j
            indices, values, index_rows, start = [], [], [], 0
            for b in range(0, len(unit), batch_size):
                rows = unit[b : b + batch_size]
                batch = collate([dataset[i] for i in rows])
                with torch.no_grad():
                    logits = teacher(input_ids=batch["input_ids"].to(device),
                                     attention_mask=batch["attention_mask"].to(device)).logits
                groups = target_groups(batch["labels"], batch["is_counterfactual"])
                for r, i in enumerate(rows):
                    sel = logits[r][(groups[r] >= 0).to(logits.device), :vocab]
                    top = sel.topk(min(top_k, vocab), dim=-1)
                    indices.append(top.indices.to(torch.int32).cpu())
                    values.append(top.values.cpu())
                    n = sel.shape[0]
                    index_rows.append({"id": dataset.ids[i], "shard": shard, "start": start,
                                       "length": n, "hash": ids_hash(dataset[i]["input_ids"])})
                    start += n
                bar.update(len(rows))
            name = out / f"shard-{shard:05d}.safetensors"
            tmp = name.with_name(name.name + ".tmp")
            save_file({"indices": torch.cat(indices).contiguous(),
                       "logits": torch.cat(values).contiguous()}, str(tmp))
            os.replace(tmp, name)
            yield index_rows
        bar.close()

    # a unit is one shard file of shard_rows rows, numbered as one process numbers them
    RowJob(out / "index.jsonl", list(range(len(dataset))), item_key=lambda i: dataset.ids[i],
           unit=shard_rows).run(top_k_shards)
    return out


class TeacherCache:
    """Read a cache written by :func:`write_teacher_cache` and compute divergences from it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path, index_path = self.path / "meta.json", self.path / "index.jsonl"
        if not meta_path.is_file():
            raise LeafError(f"{self.path}: not a teacher cache (no meta.json)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise LeafError(f"{self.path}: unknown cache format {self.meta.get('format')!r}")
        if not index_path.is_file():
            raise LeafError(f"{self.path}: the cache is incomplete; run `leaf teacher-cache` "
                            "again with the same arguments to finish it")
        self.entries = read_jsonl(index_path)
        self.by_id = {e["id"]: k for k, e in enumerate(self.entries)}
        self._shards: dict[int, object] = {}

    def check_compatible(self, divergence: str, student_vocab: int) -> None:
        if divergence == "reverse_kl":
            raise LeafError("reverse_kl needs the full teacher distribution; use an online "
                            "teacher (teacher_model) or forward_kl / jsd with the cache")
        if self.meta["vocab_size"] > student_vocab:
            raise LeafError(f"the cache was built over {self.meta['vocab_size']} logits but the "
                            f"student has {student_vocab}; rebuild it with --student")

    def attach(self, dataset: DistillDataset) -> None:
        """Give every dataset row its cache entry; refuse rows missing or encoded differently."""
        for item, rid in zip(dataset.items, dataset.ids):
            k = self.by_id.get(rid)
            if k is None:
                raise LeafError(f"row {rid!r} of {dataset.path} is not in the teacher cache "
                                f"{self.path}; rebuild the cache from this file")
            if self.entries[k]["hash"] != ids_hash(item["input_ids"]):
                raise LeafError(f"row {rid!r} is tokenised differently than when {self.path} "
                                "was built (tokenizer, template, max_length or system prompt "
                                "changed); rebuild the cache")
            item["cache_row"] = k

    def _slice(self, entry: dict) -> tuple[torch.Tensor, torch.Tensor]:
        shard = entry["shard"]
        if shard not in self._shards:
            name = self.path / f"shard-{shard:05d}.safetensors"
            self._shards[shard] = safe_open(str(name), framework="pt")
        f = self._shards[shard]
        lo, hi = entry["start"], entry["start"] + entry["length"]
        return f.get_slice("indices")[lo:hi], f.get_slice("logits")[lo:hi]

    def top_k(self, groups, cache_rows) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, logits)`` ``[M, K]`` of a batch's counted positions (``groups >= 0``) in
        flattened order."""
        indices, values = [], []
        for r, k in enumerate(cache_rows.tolist()):
            entry = self.entries[k]
            if int((groups[r] >= 0).sum()) != entry["length"]:
                raise LeafError(f"row {entry['id']!r}: target length differs from the cache")
            idx, val = self._slice(entry)
            indices.append(idx)
            values.append(val)
        return torch.cat(indices), torch.cat(values)

    def divergence_sums(self, logits, groups, cache_rows, args) -> torch.Tensor:
        """Per-group divergence sums for a batch, as :func:`chunked_divergence` returns."""
        indices, values = self.top_k(groups, cache_rows)
        return chunked_sparse_divergence(
            logits, groups, indices, values, num_groups=2,
            divergence=args.divergence, temperature=args.temperature, beta=args.jsd_beta,
            chunk_size=args.kd_chunk_size,
        )
