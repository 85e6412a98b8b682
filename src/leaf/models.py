"""Loading models and tokenizers from a directory or a hub id, with clear errors.

``device="auto"`` means CUDA when it is available, else CPU. With more than one visible GPU
and ``device="auto"`` the model is spread over them with ``device_map="auto"`` (accelerate),
so a teacher larger than one GPU still loads. Models are returned in eval mode.

``device="cuda"`` with several visible GPUs does the same.

**GGUF.** Wherever a model goes in, a ``.gguf`` file, or a directory that holds one ``.gguf`` and
no ``config.json``, loads too: transformers reads the config, the tokenizer (with its chat
template) and the weights from the file (``from_pretrained(dir, gguf_file=...)``, needs the
``gguf`` package: ``pip install "leaf-distill[gguf]"``). The weights are dequantised to the dtype
asked for, and the model is rebuilt as a plain (unquantised) model so that it trains and saves
like any other. :func:`convert_gguf` writes such a model as a normal Hugging Face directory.

**Model names with a scheme.** A name ``SCHEME:REST`` whose scheme is registered
(:func:`register_model_scheme`) is turned into a directory or hub id by that scheme's resolver
(:func:`resolve_model_name`); any other name is returned as given. The package registers
``testbed:FAMILY/ROLE`` (the shipped testbed checkpoints) in ``leaf/__init__.py``, which every
``import leaf...`` runs first, so the command line, ``leaf run`` and ``leaf.stages`` all know it.
The registration names the resolver as ``"module:function"`` and the module is imported the first
time such a name is resolved: this module stays below the testbed (it never imports it), and the
testbed's tasks and checkpoints load only when a ``testbed:`` name is used.
"""

from __future__ import annotations

import copy
import importlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from leaf.errors import LeafError

DTYPES = ("float32", "bfloat16", "float16", "auto")
DEVICES = ("auto", "cpu", "cuda")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
GGUF_EXTRA = 'pip install "leaf-distill[gguf]"'
_SCHEME = re.compile(r"^([a-z][a-z0-9_-]*):(.*)$", re.DOTALL)
_RESOLVERS: dict[str, Callable[[str], str] | str] = {}


def register_model_scheme(scheme: str, resolver: Callable[[str], str] | str) -> None:
    """Resolve model names ``scheme:REST`` with ``resolver(REST)`` (a directory or hub id).

    ``resolver`` is a function or ``"module:function"``, imported when a name of the scheme is
    first resolved (so registering costs no import). Registering a scheme again replaces it.
    """
    if not _SCHEME.match(f"{scheme}:"):
        raise ValueError(f"model scheme {scheme!r}: use lower-case letters, digits, - and _")
    _RESOLVERS[scheme] = resolver


def model_schemes() -> list[str]:
    """The registered model-name schemes, sorted."""
    return sorted(_RESOLVERS)


def resolve_model_name(value: str | Path) -> str:
    """``SCHEME:REST`` of a registered scheme -> its resolver's directory or hub id; any other
    name (a directory, a hub id, a scheme nobody registered) -> ``str(value)`` unchanged."""
    name = str(value)
    found = _SCHEME.match(name)
    if found is None or found.group(1) not in _RESOLVERS:
        return name
    scheme, rest = found.groups()
    resolver = _RESOLVERS[scheme]
    if isinstance(resolver, str):
        module, _, function = resolver.partition(":")
        resolver = _RESOLVERS[scheme] = getattr(importlib.import_module(module), function)
    return resolver(rest)


def quiet_transformers() -> None:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards") and
    its info/warning notices: the command line shows one bar per long step, its own."""
    # heavy: torch and transformers load only when a model is touched, never on import
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other values pass through."""
    import torch  # heavy: torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LeafError(f"--device {device} asked for, but no CUDA device is available")
    return device


def torch_dtype(dtype: str):
    import torch  # heavy: torch

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
        if gguf_source(name, what) is not None:
            return
        if not p.is_dir():
            raise LeafError(f"{what} {name!r} is a file; give the model's directory or a .gguf "
                            "file")
        if need_config and not (p / "config.json").is_file():
            raise LeafError(f"{what} directory {name!r} has no config.json (not a model directory)")
        return
    if not _HUB_ID.match(str(name)) or str(name).startswith((".", "~")):
        raise LeafError(f"{what} directory {name!r} not found")


def load_tokenizer(path: str | Path, what: str = "model", padding_side: str | None = "left"):
    """Load a fast tokenizer; set a pad token (EOS when none) and the padding side (left: generation)."""
    from transformers import AutoTokenizer  # heavy: transformers

    src = str(path)
    check_model_path(src, what, need_config=False)
    directory, kwargs = pretrained_args(src, what)
    try:
        tok = AutoTokenizer.from_pretrained(directory, **kwargs)
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
    import torch  # heavy: torch
    from transformers import AutoModelForCausalLM  # heavy: transformers

    src = str(path)
    check_model_path(src, what)
    resolved = resolve_device(device)
    directory, kwargs = pretrained_args(src, what)
    kwargs["dtype"] = torch_dtype(dtype)
    multi_gpu = resolved == "cuda" and torch.cuda.device_count() > 1
    if multi_gpu:
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    except model_load_errors() as exc:
        raise load_failure(exc, what, src) from None
    model = plain_model(model)
    if not multi_gpu:
        model.to(resolved)
    model.eval()
    return model


def model_load_errors() -> tuple[type[Exception], ...]:
    """What ``from_pretrained`` raises on a missing, foreign or damaged checkpoint (a truncated
    or zero-filled ``model.safetensors`` raises ``SafetensorError``, not an OSError)."""
    try:
        from safetensors import SafetensorError  # heavy: safetensors
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return (OSError, ValueError)
    return (OSError, ValueError, SafetensorError)


def load_failure(exc: Exception, what: str, src: str | Path) -> LeafError:
    """The one-line error for a model that would not load, naming its folder."""
    hint = ""
    if type(exc).__name__ == "SafetensorError":
        hint = " (a .safetensors weights file there is truncated or damaged: copy it again)"
    return LeafError(f"cannot load the {what} from {str(src)!r}: {_first_line(exc)}{hint}")


def gguf_source(name: str | Path, what: str = "model") -> tuple[str, str] | None:
    """``(directory, file name)`` when ``name`` is a ``.gguf`` file or a directory holding one
    ``.gguf`` and no ``config.json``; None for anything else (a model directory, a hub id).

    A directory with several ``.gguf`` files and no ``config.json`` is refused: name the file.
    """
    p = Path(str(name)).expanduser()
    if p.is_file():
        return (str(p.parent), p.name) if p.suffix.lower() == ".gguf" else None
    if not p.is_dir() or (p / "config.json").is_file():
        return None
    found = sorted(f.name for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".gguf")
    if len(found) > 1:
        raise LeafError(f"{what} directory {str(name)!r} holds {len(found)} .gguf files "
                        f"({', '.join(found)}); give the one to load")
    return (str(p), found[0]) if found else None


def require_gguf(what: str = "model") -> None:
    """Fail with one line naming the extra when the ``gguf`` package is missing."""
    from transformers.utils import is_gguf_available  # heavy: transformers

    if not is_gguf_available():
        raise LeafError(f"loading the {what} from a .gguf file needs the gguf package: "
                        f"{GGUF_EXTRA}")


def pretrained_args(name: str | Path, what: str = "model") -> tuple[str, dict]:
    """``(path, kwargs)`` for ``from_pretrained``: ``gguf_file=`` set for a GGUF source."""
    gguf = gguf_source(name, what)
    if gguf is None:
        return str(name), {}
    require_gguf(what)
    return gguf[0], {"gguf_file": gguf[1]}


def load_config(path: str | Path, what: str = "model"):
    """The model's ``PretrainedConfig`` (from ``config.json``, a hub id or a GGUF file)."""
    from transformers import AutoConfig  # heavy: transformers

    src = str(path)
    directory, kwargs = pretrained_args(src, what)
    try:
        config = AutoConfig.from_pretrained(directory, **kwargs)
    except (OSError, ValueError) as exc:
        raise LeafError(f"cannot read the {what} config from {src!r}: {_first_line(exc)}") from None
    if hasattr(config, "quantization_config") and kwargs:
        del config.quantization_config
    return config


def plain_model(model):
    """A GGUF-loaded model rebuilt without its ``quantization_config`` (weights kept), so it
    trains and ``save_pretrained`` writes it; any other model is returned as it is.

    transformers marks a model loaded with ``gguf_file=`` as quantised (its weights are
    already dequantised) and then refuses to save it.
    """
    from transformers import AutoModelForCausalLM  # heavy: transformers

    quant = getattr(model.config, "quantization_config", None)
    method = (quant.get("quant_method") if isinstance(quant, dict)
              else getattr(quant, "quant_method", None))
    if str(getattr(method, "value", method)) != "gguf" or len(
            set((getattr(model, "hf_device_map", None) or {}).values())) > 1:
        return model  # not GGUF, or spread over devices (used as loaded: no training, no save)
    config = copy.deepcopy(model.config)
    del config.quantization_config
    device = next(model.parameters()).device
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or ())
    if unexpected or [k for k in missing if k not in tied]:
        raise LeafError(f"cannot rebuild the GGUF model as a plain model: missing {missing}, "
                        f"unexpected {unexpected}")
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(model.generation_config)
    plain.to(device)
    plain.train(model.training)
    return plain


def load_causal_lm(path: str | Path, what: str = "model", **kwargs):
    """``AutoModelForCausalLM.from_pretrained`` for a directory, hub id or GGUF source, with
    ``kwargs`` passed on (dtype, device_map, attn_implementation ...); GGUF models come back
    plain (:func:`plain_model`). Errors are one line naming the model."""
    from transformers import AutoModelForCausalLM  # heavy: transformers

    src = str(path)
    directory, extra = pretrained_args(src, what)
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, **extra, **kwargs)
    except model_load_errors() as exc:
        raise load_failure(exc, what, src) from None
    return plain_model(model)


def convert_gguf(source: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Write the model in ``source`` (a ``.gguf`` file or a directory holding one) as a normal
    Hugging Face directory at ``out``: ``config.json``, safetensors weights (dequantised to
    ``dtype``), the tokenizer and its chat template. ``out`` appears only when complete."""
    src = str(source)
    if not Path(src).expanduser().exists():
        raise LeafError(f"{src!r} not found")
    if gguf_source(src, "model") is None:
        raise LeafError(f"{src!r} is not a .gguf file or a directory holding one")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LeafError(f"{out} exists and is not empty; choose another --out or remove it")
    tokenizer = load_tokenizer(src, "model", padding_side=None)
    model = load_causal_lm(src, "model", dtype=torch_dtype(dtype))
    return save_model_dir(model, tokenizer, out)


def save_model_dir(model, tokenizer, out: Path) -> Path:
    """Write ``model`` and ``tokenizer`` as a Hugging Face directory at ``out`` (an empty or
    absent folder): through ``OUT.part``, renamed when complete, so ``out`` is never
    half-written."""
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out


def input_device(model):
    """The device the model's input embeddings live on (first shard under device_map)."""
    return model.get_input_embeddings().weight.device


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
