"""Loading models and tokenizers from a directory or a hub id, with clear errors.

``device="auto"`` means CUDA when it is available, else CPU. With more than one visible GPU
and ``device="auto"`` the model is spread over them with ``device_map="auto"`` (accelerate),
so a teacher larger than one GPU still loads. Models are returned in eval mode.
"""

from __future__ import annotations

from pathlib import Path

from leaf.errors import LeafError

DTYPES = ("float32", "bfloat16", "float16", "auto")


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


def _check_source(path: str | Path, what: str) -> str:
    """A local directory must exist and hold a config; anything else is tried as a hub id."""
    text = str(path)
    p = Path(text).expanduser()
    looks_local = p.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1
    if not looks_local:
        return text
    if not p.is_dir():
        raise LeafError(f"{what} directory not found: {text}")
    if what == "model" and not (p / "config.json").is_file():
        raise LeafError(f"{text} is not a model directory (no config.json)")
    return str(p)


def load_tokenizer(path: str | Path, padding_side: str = "left"):
    """Load a fast tokenizer; set a pad token (EOS when none) and the padding side."""
    from transformers import AutoTokenizer

    src = _check_source(path, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as exc:
        raise LeafError(f"cannot load a tokenizer from {src}: {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise LeafError(f"tokenizer at {src} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_model(path: str | Path, dtype: str = "float32", device: str = "auto"):
    """Load a causal LM in eval mode on ``device`` (several GPUs: ``device_map="auto"``)."""
    import torch
    from transformers import AutoModelForCausalLM

    src = _check_source(path, "model")
    resolved = resolve_device(device)
    kwargs: dict = {"dtype": torch_dtype(dtype)}
    multi_gpu = device == "auto" and resolved == "cuda" and torch.cuda.device_count() > 1
    if multi_gpu:
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except (OSError, ValueError) as exc:
        raise LeafError(f"cannot load a model from {src}: {str(exc).splitlines()[0]}") from None
    if not multi_gpu:
        model.to(resolved)
    model.eval()
    return model


def input_device(model):
    """The device the model's input embeddings live on (first shard under device_map)."""
    return model.get_input_embeddings().weight.device
