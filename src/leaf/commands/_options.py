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
