"""Loading causal LMs and their tokenizers with clear errors, dtype and device placement."""

from __future__ import annotations

import re
from pathlib import Path

from leaf.errors import LeafError

DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_model_path(name: str, what: str = "model") -> None:
    """Fail early on a local path that does not exist (hub ids are left to transformers)."""
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise LeafError(f"{what} {name!r} is a file; give the model's directory")
        if not (p / "config.json").is_file():
            raise LeafError(f"{what} directory {name!r} has no config.json (not a model directory)")
        return
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise LeafError(f"{what} directory {name!r} not found")


def load_tokenizer(name: str, what: str = "model"):
    from transformers import AutoTokenizer

    check_model_path(name, what)
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise LeafError(f"cannot load the {what} tokenizer from {name!r}: {_first_line(exc)}") from None
    if not getattr(tok, "is_fast", False):
        raise LeafError(f"the {what} tokenizer at {name!r} is not a fast tokenizer (offsets needed)")
    return tok


def load_causal_lm(name: str, dtype: str = "float32", device: str = "auto", what: str = "model"):
    """Load a causal LM for inference.

    ``device``: ``cpu``; ``cuda`` (spread over the visible GPUs with ``device_map="auto"``);
    ``auto`` (``cuda`` when a GPU is visible, else ``cpu``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise LeafError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if device not in DEVICES:
        raise LeafError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise LeafError("--device cuda was asked for but no GPU is visible")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    check_model_path(name, what)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=getattr(torch, dtype), device_map="auto" if use_cuda else None
        )
    except (OSError, ValueError) as exc:
        raise LeafError(f"cannot load the {what} from {name!r}: {_first_line(exc)}") from None
    model.eval()
    return model


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
