"""How much distillation signal the counterfactuals carry, before any training.

The counterfactual term of LeaF teaches the student only where its next-token distribution on
the counterfactual differs from the teacher's. Verification keeps only counterfactuals both
models already answer correctly, so the kept rows may be ones the student already matches: then
the term is near-zero-loss rehearsal and LeaF trains like plain KD. This module measures it: the
forward ``KL(teacher || student)`` at temperature 1, summed over each row's response tokens,
with the tokens rendered exactly as distillation renders them
(:class:`leaf.distill.data.DistillDataset`: the student's chat template, response-level rows
scored on their ``target`` only) and the divergence of the loss
(:func:`leaf.distill.losses.chunked_divergence`).

:func:`response_kl` runs the models; :func:`summarise` turns per-row sums into the figures
``leaf prune --verify`` prints (per row and per token, counterfactuals vs their originals).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.data.jsonl import write_json_atomic
from leaf.data.resumable import fingerprint
from leaf.distill.vocab import check_shared_vocab
from leaf.errors import LeafError
from leaf.models import load_model, load_tokenizer

# below this share of their originals' KL, the kept counterfactuals teach little (the warning)
LOW_RATIO = 0.25


def response_kl(teacher, student, tokenizer, rows: Sequence[dict[str, Any]], *,
                system: str | None = None, max_length: int | None = None,
                batch_size: int = 8, chunk_size: int = 1024) -> dict[str, tuple[float, int]]:
    """``{row id: (KL sum, response tokens)}`` for every training row of ``rows``.

    ``teacher`` and ``student`` are causal LMs sharing the student's vocabulary (the teacher's
    extra logits are dropped, as in the loss); ``tokenizer`` is the student's. Each row is one
    teacher-forced forward of each model; the sum runs over the positions distillation trains
    on, and ``tokens`` counts them. Rows distillation would drop (``verified: false``, no
    target token left) are absent from the result.
    """
    # torch and the training modules: imported here so the figures below stay light to import
    import torch

    from leaf.distill.data import IGNORE, DistillDataset  # heavy: torch
    from leaf.distill.losses import chunked_divergence  # heavy: torch
    from leaf.distill.objective import shifted_labels  # heavy: torch

    rows = list(rows)
    if not rows:
        return {}
    data = DistillDataset(rows, tokenizer, max_length=max_length, system=system, name="rows")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device_s = next(student.parameters()).device
    device_t = next(teacher.parameters()).device
    order = sorted(range(len(data)), key=lambda i: len(data[i]["input_ids"]))
    out: dict[str, tuple[float, int]] = {}
    with torch.no_grad():
        for lo in range(0, len(order), batch_size):
            batch = order[lo:lo + batch_size]
            width = max(len(data[i]["input_ids"]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, i in enumerate(batch):  # right padding: positions as without padding
                n = len(data[i]["input_ids"])
                ids[j, :n] = torch.tensor(data[i]["input_ids"])
                labels[j, :n] = torch.tensor(data[i]["labels"])
                mask[j, :n] = 1
            target = shifted_labels(labels) != IGNORE
            groups = torch.where(target, torch.arange(len(batch)).view(-1, 1), -1)
            s_logits = student(input_ids=ids.to(device_s), attention_mask=mask.to(device_s)).logits
            t_logits = teacher(input_ids=ids.to(device_t), attention_mask=mask.to(device_t)).logits
            sums = chunked_divergence(s_logits, t_logits, groups, num_groups=len(batch),
                                      divergence="forward_kl", temperature=1.0,
                                      chunk_size=chunk_size)
            counts = target.sum(dim=1)
            for j, i in enumerate(batch):
                out[data.ids[i]] = (float(sums[j]), int(counts[j]))
    return out


@dataclass(frozen=True)
class SignalFigures:
    """Mean forward KL(teacher || student) on the response tokens of the kept counterfactuals
    and of the originals they came from: per row (``*_row``) and per token (``*_token``)."""

    counterfactuals: int
    originals: int
    cf_row: float
    cf_token: float
    orig_row: float
    orig_token: float

    @property
    def ratio_row(self) -> float | None:
        return self.cf_row / self.orig_row if self.orig_row > 0 else None

    @property
    def ratio_token(self) -> float | None:
        return self.cf_token / self.orig_token if self.orig_token > 0 else None

    @property
    def low(self) -> bool:
        """True when the kept counterfactuals carry less than a quarter of their originals' KL
        per row."""
        return self.ratio_row is not None and self.ratio_row < LOW_RATIO

    def as_dict(self) -> dict[str, Any]:
        return {"counterfactuals": self.counterfactuals, "originals": self.originals,
                "cf_kl_row": self.cf_row, "cf_kl_token": self.cf_token,
                "orig_kl_row": self.orig_row, "orig_kl_token": self.orig_token,
                "ratio_row": self.ratio_row, "ratio_token": self.ratio_token}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SignalFigures:
        return cls(d["counterfactuals"], d["originals"], d["cf_kl_row"], d["cf_kl_token"],
                   d["orig_kl_row"], d["orig_kl_token"])

    def __str__(self) -> str:
        def ratio(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f}"

        return (f"KL(teacher || student) on response tokens: kept counterfactuals "
                f"{self.cf_row:.3f}/row {self.cf_token:.4f}/token ({self.counterfactuals} rows), "
                f"their originals {self.orig_row:.3f}/row {self.orig_token:.4f}/token "
                f"({self.originals} rows); ratio {ratio(self.ratio_row)} per row, "
                f"{ratio(self.ratio_token)} per token")


LOW_SIGNAL_LINE = ("the kept counterfactuals carry less than a quarter of their originals' KL: "
                   "LeaF will train mostly on rows the student already matches; expect results "
                   "close to KD")


def summarise(kl: dict[str, tuple[float, int]], counterfactuals: Sequence[str],
              originals: Sequence[str]) -> SignalFigures | None:
    """The figures for these counterfactual ids and original ids (each counted once; ids
    absent from ``kl`` are left out); None when either side has no measured row."""
    cf = [kl[i] for i in dict.fromkeys(counterfactuals) if i in kl]
    orig = [kl[i] for i in dict.fromkeys(originals) if i in kl]
    if not cf or not orig:
        return None

    def means(pairs: list[tuple[float, int]]) -> tuple[float, float]:
        tokens = sum(n for _, n in pairs)
        total = sum(s for s, _ in pairs)
        return total / len(pairs), (total / tokens if tokens else 0.0)

    cf_row, cf_token = means(cf)
    orig_row, orig_token = means(orig)
    return SignalFigures(len(cf), len(orig), cf_row, cf_token, orig_row, orig_token)


def signal_file(out: str | Path) -> Path:
    """Where verification writes the counterfactual signal of the pruned file ``out``."""
    return Path(out).with_suffix(".signal.json")


def read_signal(out: str | Path) -> SignalFigures | None:
    """The figures written beside ``out``, or None (no verification, none kept)."""
    path = signal_file(out)
    if not path.exists():
        return None
    figures = json.loads(path.read_text(encoding="utf-8")).get("figures")
    return None if figures is None else SignalFigures.from_dict(figures)


def measure_kept(rows: list[dict[str, Any]], teacher: str, student: str, path: Path, *,
                 dtype: str = "float32", device: str = "auto", batch_size: int = 8
                 ) -> tuple[SignalFigures | None, str | None]:
    """The KL figures of the kept (verified) counterfactuals of a pruned file's ``rows`` and of
    their originals, written to ``path`` (:func:`measure_pairs`). ``(None, why)`` when there is
    nothing to measure or the models do not share a vocabulary."""

    kept = [r for r in rows if r.get("kind") == "counterfactual" and r.get("verified") is True]
    if not kept:
        return None, "no counterfactual was kept, nothing to measure"
    return measure_pairs(kept, originals_of(rows, kept), teacher, student, path, dtype=dtype,
                         device=device, batch_size=batch_size)


def originals_of(rows: Sequence[dict[str, Any]], counterfactuals: Sequence[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """The original rows of ``rows`` that ``counterfactuals`` came from, in file order."""
    origins = {r["origin_id"] for r in counterfactuals}
    return [r for r in rows if r.get("kind") == "original" and r["id"] in origins]


def measure_pairs(counterfactuals: list[dict[str, Any]], originals: list[dict[str, Any]],
                  teacher: str, student: str, path: Path, *, dtype: str = "float32",
                  device: str = "auto", batch_size: int = 8, extra: dict[str, Any] | None = None
                  ) -> tuple[SignalFigures | None, str | None]:
    """The KL figures of ``counterfactuals`` against ``originals``, written to ``path`` with
    each measured row's hash (and ``extra``'s keys beside them), so a rerun measures only rows
    that changed and loads no model when none did. ``(None, why)`` when no counterfactual has a
    response token or the models do not share a vocabulary."""
    todo_rows = counterfactuals + originals
    made_by = {"teacher": teacher, "student": student, "dtype": dtype}
    before: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("made_by") == made_by:
                before = old.get("rows", {})
        except (OSError, ValueError):
            before = {}
    hashes = {r["id"]: fingerprint(r) for r in todo_rows}
    measured = {i: (v[1], v[2]) for i, v in before.items()
                if i in hashes and v[0] == hashes[i]}
    missing = [r for r in todo_rows if r["id"] not in measured]
    if missing:
        student_tok = load_tokenizer(student, "student", padding_side=None)
        try:
            check_shared_vocab(student_tok, load_tokenizer(teacher, "teacher", padding_side=None))
        except LeafError as exc:
            return None, f"not measured: {exc}"
        teacher_model = load_model(teacher, dtype, device, "teacher")
        student_model = load_model(student, dtype, device, "student")
        measured.update(response_kl(teacher_model, student_model, student_tok, missing,
                                    batch_size=batch_size))
        del teacher_model, student_model
    figures = summarise(measured, [r["id"] for r in counterfactuals],
                        [r["id"] for r in originals])
    write_json_atomic(path, {
        **(extra or {}), "made_by": made_by,
        "figures": None if figures is None else figures.as_dict(),
        "rows": {i: [hashes[i], *measured[i]] for i in hashes if i in measured}})
    if figures is None:
        return None, "no kept counterfactual has a response token to measure"
    return figures, None
