"""Typed settings: dataclasses whose every value is checked, built from plain mappings.

leaf's stage options (``leaf.stages``) and the ``leaf run`` config (``leaf.pipeline.config``) are
dataclasses. A field may carry its bounds in its metadata (:func:`setting`); :class:`Checked`
checks the values whenever an object is made (from Python or from a file), and
:func:`from_mapping` builds one from a YAML mapping, refusing unknown keys (with a "did you
mean" suggestion) and values of the wrong type, and naming the dotted key in every message.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar, Union

from leaf.errors import LeafError

T = TypeVar("T")


class SettingError(LeafError):
    """A setting that is unknown, of the wrong type or out of range (the message names it)."""


def setting(default: Any = dataclasses.MISSING, *, help: str = "",
            ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a one-line ``help`` and optional bounds (``ge``, ``gt``, ``le``,
    ``lt``), checked by :class:`Checked`. For lists of numbers the bounds apply to each item."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Checked:
    """Mixin for dataclasses: values are checked against their declared types and bounds when
    the object is made; ``check()`` is the hook for rules that tie several fields together."""

    def __post_init__(self) -> None:
        check_fields(self, type(self).__name__)
        self.check()

    def check(self) -> None:
        """Cross-field rules; raise :class:`SettingError` naming the field(s)."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _bounds_error(value: Any, meta: Mapping[str, Any]) -> str | None:
    items = value if isinstance(value, list | tuple) else [value]
    for v in items:
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        for key, ok, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                              ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
            bound = meta.get(key)
            if bound is not None and not ok(v, bound):
                return f"must be {word} {bound}, got {v}"
    return None


def check_fields(obj: Any, where: str) -> None:
    """Check every field of dataclass ``obj``: type (``where.field`` in messages) and bounds."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        key = f"{where}.{f.name}"
        convert(hints[f.name], value, key)
        msg = _bounds_error(value, f.metadata)
        if msg:
            raise SettingError(f"{key}: {msg}")


def choices(cls: type, name: str) -> tuple:
    """The values a ``Literal`` field of dataclass ``cls`` allows (for argparse ``choices``)."""
    return typing.get_args(_hints(cls)[name])


def did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_keys(data: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Refuse the first key of ``data`` that is not in ``known``, suggesting the closest."""
    known = list(known)
    for key in data:
        if key not in known:
            raise SettingError(f"{where}.{key}: unknown key{did_you_mean(str(key), known)}; "
                               f"known: {', '.join(sorted(known))}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))


def convert(tp: Any, value: Any, key: str) -> Any:
    """``value`` checked (and, where lossless, converted) against type ``tp``; else an error
    naming ``key``. Supports bool, int, float (ints accepted), str, None, Any, Literal, unions,
    ``list[X]``, ``dict[str, X]`` and nested dataclasses (built with :func:`from_mapping`)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return convert(arg, value, key)
            except SettingError:
                continue
        raise SettingError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise SettingError(f"{key}: expected one of {_type_name(tp)}, got {value!r}"
                           f"{did_you_mean(str(value), map(str, typing.get_args(tp)))}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, list | tuple):
            args = typing.get_args(tp)
            item = args[0] if args else Any
            return [convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict or tp is dict:
        if isinstance(value, Mapping):
            args = typing.get_args(tp)
            item = args[1] if len(args) == 2 else Any
            return {k: convert(item, v, f"{key}.{k}") for k, v in value.items()}
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_mapping(tp, value, key)
    else:
        return value  # a type this checker does not know: accepted as given
    raise SettingError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """An instance of dataclass ``cls`` from ``data``; keys not given take their defaults.

    Every key is checked (unknown keys, types, bounds) and named as ``where.key`` in errors.
    """
    if data is not None and not isinstance(data, Mapping):
        raise SettingError(f"{where}: expected a mapping, got {data!r}")
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown_keys(data, fields, where)
    hints = _hints(cls)
    kwargs = {}
    for k, v in data.items():
        value = convert(hints[k], v, f"{where}.{k}")
        msg = _bounds_error(value, fields[k].metadata)
        if msg:
            raise SettingError(f"{where}.{k}: {msg}")
        kwargs[k] = value
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SettingError(f"{where}.{missing[0]}: missing")
    try:
        return cls(**kwargs)
    except SettingError as exc:
        raise SettingError(_rename(str(exc), cls.__name__, where)) from None


def _rename(message: str, class_name: str, where: str) -> str:
    """Messages of ``Checked`` name ``ClassName.field``; in a config that is ``where.field``."""
    return message.replace(f"{class_name}.", f"{where}.", 1)


def to_mapping(obj: Any) -> Any:
    """A dataclass (or a structure holding dataclasses) as plain dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.init}
    if isinstance(obj, Mapping):
        return {k: to_mapping(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_mapping(v) for v in obj]
    return obj


def describe(cls: type, prefix: str = "", width: int = 30, defaults: Any = None) -> list[str]:
    """One line per key of dataclass ``cls`` (nested dataclasses as dotted keys): the key, its
    default and its help, e.g. ``prune.tau = 0.1   cut-off of the fixed rule``. A nested
    dataclass's defaults are those of the parent's default object (``defaults``). Map-valued
    fields whose items are dataclasses (named sets, variants) list the item's keys under
    ``KEY.NAME.``."""
    lines: list[str] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if defaults is not None:
            default = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            lines.append(f"{key}:".ljust(width) + f"  {help_text}")
            lines += describe(tp, key + ".", width,
                              default if dataclasses.is_dataclass(default) else None)
            continue
        args = typing.get_args(tp)
        if typing.get_origin(tp) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
            lines.append(f"{key}.NAME:".ljust(width) + f"  {help_text}")
            lines += describe(args[1], key + ".NAME.", width)
            continue
        value = to_mapping(default)
        shown = "null" if value is None else str(value).replace("True", "true").replace(
            "False", "false").replace("None", "null").replace("'", "")
        lines.append(f"{key} = {shown}".ljust(width) + f"  {help_text}")
    return lines
