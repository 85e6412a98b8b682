"""Build a stage's options from command-line flags; errors name the flag, not the field."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from leaf.settings import SettingError

T = TypeVar("T")


def flag(field: str) -> str:
    """``max_new_tokens`` -> ``--max-new-tokens``."""
    return "--" + field.replace("_", "-")


def _number(value: float) -> str:
    return f"{value:g}"


def _allowed(meta: Mapping[str, Any]) -> str | None:
    """The range a field's bounds allow, in words: ``in [0, 1)``, ``at least 1``."""
    lo = ("[", meta["ge"]) if meta.get("ge") is not None else \
        ("(", meta["gt"]) if meta.get("gt") is not None else None
    hi = ("]", meta["le"]) if meta.get("le") is not None else \
        (")", meta["lt"]) if meta.get("lt") is not None else None
    if lo and hi:
        return f"in {lo[0]}{_number(lo[1])}, {_number(hi[1])}{hi[0]}"
    if lo:
        return ("at least " if lo[0] == "[" else "greater than ") + _number(lo[1])
    if hi:
        return ("at most " if hi[0] == "]" else "less than ") + _number(hi[1])
    return None


def build(cls: type[T], flags: Mapping[str, str] | None = None, **values: Any) -> T:
    """``cls(**values)``; a :class:`SettingError` is reworded to name the flag of the field
    (``flags[field]``, else ``--field-name``) and, for a bound, the whole allowed range:
    ``--tau must be in [0, 1], got 2.0``. ``flags`` may also map other dotted names that a
    message mentions (``generation.temperature``) to their flags."""
    flags = dict(flags or {})
    try:
        return cls(**values)
    except SettingError as exc:
        message = str(exc)
        m = re.match(rf"{cls.__name__}\.(\w+): (.*)", message, re.S)
        if not m:
            raise
        field, rest = m.groups()
        name = flags.get(field, flag(field))
        for key, other in flags.items():
            if "." in key:
                rest = rest.replace(key, other)
        meta = next((f.metadata for f in dataclasses.fields(cls) if f.name == field), {})
        bound = re.match(r"must be [<>]=? \S+, got (.*)", rest)
        allowed = _allowed(meta) if bound else None
        if allowed:
            raise SettingError(f"{name} must be {allowed}, got {bound.group(1)}") from None
        raise SettingError(f"{name}: {rest}") from None


# -- flags every model-loading subcommand spells the same way ----------------------------------

MODEL_HELP = "directory, hub id or testbed:FAMILY/ROLE (a shipped testbed checkpoint)"


def model_ref(value: str) -> str:
    """argparse ``type`` of a model flag: ``testbed:FAMILY/ROLE`` (as in run configs) becomes the
    shipped checkpoint's directory; a directory or hub id passes unchanged."""
    import argparse

    from leaf.errors import LeafError
    from leaf.models import resolve_model_name

    try:
        return resolve_model_name(value)
    except (LeafError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def device_arg(value: str) -> str:
    """argparse ``type`` of ``--device``: auto, cpu, cuda or cuda:N."""
    import argparse

    from leaf.stages.options import check_device

    try:
        check_device(value, "--device")
    except SettingError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--device: ")) from None
    return value


def add_device(parser, default: str = "auto", what: str = "") -> None:
    """``--device``: the same values and meaning in every subcommand."""
    from leaf.stages.options import DEVICE_HELP

    parser.add_argument("--device", type=device_arg, default=default, metavar="DEVICE",
                        help=f"{what}{DEVICE_HELP} (default {default})")


def add_dtype(parser, default: str = "float32", what: str = "weights' dtype") -> None:
    """``--dtype``: float32 unless said otherwise, auto = the checkpoint's own dtype."""
    from leaf.models import DTYPES

    parser.add_argument("--dtype", choices=DTYPES, default=default,
                        help=f"{what}: {', '.join(DTYPES)} (auto: the checkpoint's own; "
                             f"default {default})")


def quiet_environment() -> None:
    """Progress bars off (tqdm, the hub) for runs whose stages log to a file; must run before
    tqdm is imported, which reads TQDM_DISABLE once."""
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
