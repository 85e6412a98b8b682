"""Make a student directory from a teacher (``leaf make-student``): quantised weights, fewer
decoder layers, or both; the science is in :mod:`leaf.distill.shrink`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from leaf.errors import LeafError
from leaf.models import (
    check_model_path,
    load_causal_lm,
    load_tokenizer,
    save_model_dir,
    torch_dtype,
)
from leaf.stages._common import options_or_default
from leaf.stages.options import StudentOptions


@dataclass
class StudentSummary:
    """What :func:`make_student` did; ``str()`` is the line ``leaf make-student`` prints."""

    out: Path
    layers_before: int
    kept: list[int] = field(default_factory=list)
    quantised: int = 0  # weight matrices rounded
    bits: int | None = None
    group: int = 0

    def __str__(self) -> str:
        parts = []
        if len(self.kept) != self.layers_before:
            shown = ", ".join(map(str, self.kept))
            parts.append(f"{len(self.kept)} of {self.layers_before} decoder layers kept ({shown})")
        else:
            parts.append(f"all {self.layers_before} decoder layers kept")
        if self.bits is not None:
            per = f"groups of {self.group}" if self.group else "one scale per row"
            parts.append(f"{self.quantised} weight matrices at {self.bits} bits ({per})")
        return f"leaf make-student: {'; '.join(parts)} -> {self.out}"


def make_student(teacher: str | Path, out: str | Path,
                 options: StudentOptions | None = None) -> StudentSummary:
    """Write a student made from ``teacher`` (a directory, hub id or ``.gguf``) to ``out``: a
    Hugging Face directory (config, safetensors weights, generation config, tokenizer and chat
    template) with the teacher's architecture and tokenizer, its decoder layers cut to those
    ``options`` keep and their weight matrices rounded to ``options.bits``. ``out`` must not
    exist or be empty; it appears only when complete."""
    import torch  # torch and transformers load when the stage runs, not at import

    from leaf.distill.shrink import decoder_layers, drop_layers, layers_to_keep, quantise_layers

    opts = options_or_default(options, StudentOptions)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LeafError(f"{out} exists and is not empty; choose another --out or remove it")
    check_model_path(str(teacher), "teacher")
    tokenizer = load_tokenizer(teacher, "teacher", padding_side=None)
    model = load_causal_lm(teacher, "teacher", dtype=torch.float32)
    n = len(decoder_layers(model))
    keep = layers_to_keep(n, opts.keep_every, opts.keep_first, opts.keep_last)
    if len(keep) != n:
        drop_layers(model, keep)
    quantised = quantise_layers(model, opts.bits, opts.group) if opts.bits is not None else 0
    model.to(torch_dtype(opts.dtype))
    save_model_dir(model, tokenizer, out)
    return StudentSummary(out, n, keep, quantised, opts.bits, opts.group)
