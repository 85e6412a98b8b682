"""Loading models and tokenizers from a directory or a hub id, with clear errors.

``device="auto"`` means CUDA when it is available, else CPU. With more than one visible GPU
and ``device="auto"`` the model is spread over them with ``device_map="auto"`` (accelerate),
so a teacher larger than one GPU still loads. Models are returned in eval mode.

``device="cuda"`` with several visible GPUs does the same.
"""

from __future__ import annotations

import re
from pathlib import Path

from leaf.errors import LeafError

DTYPES = ("float32", "bfloat16", "float16", "auto")
DEVICES = ("auto", "cpu", "cuda")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def quiet_transformers() -> None:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards") and
    its info/warning notices: the command line shows one bar per long step, its own."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other values pass through."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LeafError(f"--device {device} asked for, but no CUDA device is available")
    return device


def torch_dtype(dtype: str):
    import torch

    if dtype == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16,
                "float16": torch.float16}[dtype]
    except KeyError:
        raise LeafError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}") from None


def check_model_path(name: str, what: str = "model", need_config: bool = True) -> None:
    """Fail early on a local path that does not exist (hub ids are left to transformers)."""
    p = Path(str(name)).expanduser()
    if p.exists():
        if not p.is_dir():
            raise LeafError(f"{what} {name!r} is a file; give the model's directory")
        if need_config and not (p / "config.json").is_file():
            raise LeafError(f"{what} directory {name!r} has no config.json (not a model directory)")
        return
    if not _HUB_ID.match(str(name)) or str(name).startswith((".", "~")):
        raise LeafError(f"{what} directory {name!r} not found")


def load_tokenizer(path: str | Path, what: str = "model", padding_side: str | None = "left"):
    """Load a fast tokenizer; set a pad token (EOS when none) and the padding side (left: generation)."""
    from transformers import AutoTokenizer

    src = str(path)
    check_model_path(src, what, need_config=False)
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as exc:
        raise LeafError(f"cannot load the {what} tokenizer from {src!r}: {_first_line(exc)}") from None
    if not getattr(tok, "is_fast", False):
        raise LeafError(f"the {what} tokenizer at {src!r} is not a fast tokenizer (offsets needed)")
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise LeafError(f"the {what} tokenizer at {src} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    if padding_side:
        tok.padding_side = padding_side
    return tok


def load_model(path: str | Path, dtype: str = "float32", device: str = "auto",
               what: str = "model"):
    """Load a causal LM in eval mode on ``device`` (several GPUs: ``device_map="auto"``)."""
    import torch
    from transformers import AutoModelForCausalLM

    src = str(path)
    check_model_path(src, what)
    resolved = resolve_device(device)
    kwargs: dict = {"dtype": torch_dtype(dtype)}
    multi_gpu = resolved == "cuda" and torch.cuda.device_count() > 1
    if multi_gpu:
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except model_load_errors() as exc:
        raise load_failure(exc, what, src) from None
    if not multi_gpu:
        model.to(resolved)
    model.eval()
    return model


def model_load_errors() -> tuple[type[Exception], ...]:
    """What ``from_pretrained`` raises on a missing, foreign or damaged checkpoint (a truncated
    or zero-filled ``model.safetensors`` raises ``SafetensorError``, not an OSError)."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return (OSError, ValueError)
    return (OSError, ValueError, SafetensorError)


def load_failure(exc: Exception, what: str, src: str | Path) -> LeafError:
    """The one-line error for a model that would not load, naming its folder."""
    hint = ""
    if type(exc).__name__ == "SafetensorError":
        hint = " (a .safetensors weights file there is truncated or damaged: copy it again)"
    return LeafError(f"cannot load the {what} from {str(src)!r}: {_first_line(exc)}{hint}")


def input_device(model):
    """The device the model's input embeddings live on (first shard under device_map)."""
    return model.get_input_embeddings().weight.device


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
