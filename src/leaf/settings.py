"""Typed settings: dataclasses whose every value is checked, built from plain mappings.

leaf's stage options (``leaf.stages``) are the one place a setting is declared: its type, its
bounds, its default, its help and, where ``leaf run`` deliberately uses another default, that
one too (:func:`setting`). The ``leaf run`` config (``leaf.pipeline.config``) takes its sections
from them (:func:`fields_of`) and the command line its flags (``leaf.commands._options``).

:class:`Checked` checks the values whenever an object is made (from Python or from a file), and
:func:`from_mapping` builds one from a YAML mapping, refusing unknown keys (with a "did you
mean" suggestion) and values of the wrong type. A :class:`SettingError` carries the setting it
is about (``owner`` and ``path``) and the problem, so each caller names the setting in its own
words: ``PruneOptions.tau`` from Python, ``prune.tau`` in a run config, ``--tau`` on the
command line.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar, Union

from leaf.errors import LeafError

T = TypeVar("T")


class SettingError(LeafError):
    """A setting that is unknown, of the wrong type or out of range (the message names it).

    Made with :meth:`at`, it also says which setting (``owner``: a class name or a dotted
    config prefix; ``path``: the field, ``sizes[1]`` for an item), the ``problem``, and for a
    bound the field's ``bounds`` and the ``value``. ``problem`` may hold ``{}`` for other
    settings it mentions (``mentions``, paths relative to the owner), so that a caller can
    name them as it names the setting itself (:meth:`named`)."""

    def __init__(self, message: str, *, owner: str | None = None, path: str | None = None,
                 problem: str | None = None, bounds: Mapping[str, Any] | None = None,
                 value: Any = None, mentions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.owner, self.path, self.problem = owner, path, problem
        self.bounds, self.value, self.mentions = bounds, value, mentions

    @classmethod
    def at(cls, owner: str, path: str, problem: str, *, bounds: Mapping[str, Any] | None = None,
           value: Any = None, mentions: tuple[str, ...] = ()) -> SettingError:
        """The error about setting ``owner.path`` (``path`` alone when ``owner`` is empty)."""
        key = f"{owner}.{path}" if owner else path
        text = problem.format(*mentions) if mentions else problem
        return cls(f"{key}: {text}", owner=owner, path=path, problem=problem, bounds=bounds,
                   value=value, mentions=mentions)

    @property
    def field(self) -> str | None:
        """The field the error is about (``sizes`` for ``sizes[1]``), if known."""
        return None if self.path is None else self.path.split("[", 1)[0].split(".", 1)[0]

    def moved(self, owner: str) -> SettingError:
        """The same error with the setting named under ``owner`` (a config's dotted prefix)."""
        if self.path is None:
            return self
        return SettingError.at(owner, self.path, self.problem, bounds=self.bounds,
                               value=self.value, mentions=self.mentions)

    def called(self, name: str) -> SettingError:
        """The same problem about the setting called ``name`` (``distill.args.max_steps``)."""
        if self.problem is None:
            return self
        text = self.problem.format(*self.mentions) if self.mentions else self.problem
        return SettingError(f"{name}: {text}")

    def named(self, name: str, mentions: Mapping[str, str] | None = None) -> SettingError:
        """The message a command line gives: the setting called ``name`` (``--tau``), other
        settings it mentions by ``mentions[path]``, and a bound as the whole allowed range
        (``--tau must be in [0, 1], got 2.0``)."""
        if self.problem is None:
            return self
        if self.bounds is not None and allowed_range(self.bounds):
            return SettingError(f"{name} must be {allowed_range(self.bounds)}, got {self.value}")
        others = [(mentions or {}).get(m, m) for m in self.mentions]
        return SettingError(f"{name}: {self.problem.format(*others)}")


def setting(default: Any = dataclasses.MISSING, *, help: str = "",
            ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None,
            default_factory: Any = dataclasses.MISSING, run: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a one-line ``help`` and optional bounds (``ge``, ``gt``, ``le``,
    ``lt``), checked by :class:`Checked`. For lists of numbers the bounds apply to each item.

    ``run`` is the default a ``leaf run`` config uses instead of ``default`` (declared here,
    beside the option, so that the difference is written once): say larger generation batches
    than the command's default."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if run is not dataclasses.MISSING:
        meta["run"] = run
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def default_of(cls: type, name: str, *, run: bool = False) -> Any:
    """Field ``name``'s default in dataclass ``cls`` (with ``run``: the run config's, where the
    field declares one)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if run and "run" in f.metadata:
        return copy.deepcopy(f.metadata["run"])
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def help_of(cls: type, name: str) -> str:
    """Field ``name``'s one-line help in dataclass ``cls``."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("help", "")


def run_defaults(cls: type[T]) -> T:
    """An instance of option class ``cls`` with the run config's defaults (``setting(run=)``)."""
    return cls(**{f.name: default_of(cls, f.name, run=True) for f in dataclasses.fields(cls)
                  if f.init and "run" in f.metadata})


def fields_of(source: type, names: Iterable[str] | None = None, *, exclude: Iterable[str] = (),
              optional: bool = False, help: str | None = None) -> Any:
    """Class decorator (put it *below* ``@dataclass``): the decorated class gets fields of
    option class ``source`` -- their types, bounds, help and defaults (the run-config default
    where one is declared) -- so that a config section is composed from the stage's options
    and never re-declares one.

    ``names`` picks the fields (default: all but ``exclude``), in ``source``'s order and
    after the class's own. With ``optional`` every field becomes ``T | None = None``: an override
    that takes the value from elsewhere when unset (``help``: its help, ``{name}`` filled in).
    """
    hints = typing.get_type_hints(source)
    chosen = [f for f in dataclasses.fields(source) if f.init and f.name not in set(exclude)
              and (names is None or f.name in set(names))]

    def decorate(cls: type) -> type:
        own = dict(cls.__dict__.get("__annotations__", {}))
        annotations: dict[str, Any] = {}
        for f in chosen:
            meta = dict(f.metadata)
            if optional:
                annotations[f.name] = hints[f.name] | None
                if help is not None:
                    meta["help"] = help.format(name=f.name)
                meta.pop("run", None)
                setattr(cls, f.name, dataclasses.field(default=None, metadata=meta))
                continue
            annotations[f.name] = hints[f.name]
            if "run" in meta or f.default_factory is not dataclasses.MISSING:
                value = default_of(source, f.name, run=True)
                setattr(cls, f.name, dataclasses.field(
                    default_factory=lambda v=value: copy.deepcopy(v), metadata=meta))
            else:
                setattr(cls, f.name, dataclasses.field(default=f.default, metadata=meta))
        cls.__annotations__ = {**own, **annotations}
        return cls

    return decorate


_SAID: set[str] = set()


def deprecated(message: str) -> None:
    """One ``leaf: deprecated: ...`` line on stderr (an old spelling that still works), once
    per process however often the setting is read."""
    if message not in _SAID:
        _SAID.add(message)
        print(f"leaf: deprecated: {message}", file=sys.stderr, flush=True)


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


def _number(value: float) -> str:
    return f"{value:g}"


def allowed_range(meta: Mapping[str, Any]) -> str | None:
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


def check_bounds(value: Any, meta: Mapping[str, Any], owner: str, path: str) -> None:
    """Raise a :class:`SettingError` about ``owner.path`` if ``value`` (or an item of it) is
    outside the field's bounds."""
    items = value if isinstance(value, list | tuple) else [value]
    for v in items:
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        for key, ok, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                              ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
            bound = meta.get(key)
            if bound is not None and not ok(v, bound):
                raise SettingError.at(owner, path, f"must be {word} {bound}, got {v}",
                                      bounds=meta, value=v)


def check_fields(obj: Any, owner: str) -> None:
    """Check every field of dataclass ``obj``: its type and bounds (``owner.field`` in
    messages)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        convert(hints[f.name], value, f.name, owner)
        check_bounds(value, f.metadata, owner, f.name)


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
            raise SettingError.at(where, str(key), f"unknown key{did_you_mean(str(key), known)}"
                                  f"; known: {', '.join(sorted(known))}")


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


def convert(tp: Any, value: Any, path: str, owner: str = "") -> Any:
    """``value`` checked (and, where lossless, converted) against type ``tp``; else a
    :class:`SettingError` about ``owner.path``. Supports bool, int, float (ints accepted), str,
    None, Any, Literal, unions, ``list[X]``, ``dict[str, X]`` and nested dataclasses (built
    with :func:`from_mapping`)."""
    origin = typing.get_origin(tp)

    def wrong(problem: str) -> SettingError:
        return SettingError.at(owner, path, problem)

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return convert(arg, value, path, owner)
            except SettingError:
                continue
        raise wrong(f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise wrong(f"expected one of {_type_name(tp)}, got {value!r}"
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
            return [convert(item, v, f"{path}[{i}]", owner) for i, v in enumerate(value)]
    elif origin is dict or tp is dict:
        if isinstance(value, Mapping):
            args = typing.get_args(tp)
            item = args[1] if len(args) == 2 else Any
            return {k: convert(item, v, f"{path}.{k}", owner) for k, v in value.items()}
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_mapping(tp, value, f"{owner}.{path}" if owner else path)
    else:
        return value  # a type this checker does not know: accepted as given
    raise wrong(f"expected {_type_name(tp)}, got {value!r}")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """An instance of dataclass ``cls`` from ``data``; keys not given take their defaults.

    Every key is checked (unknown keys, types, bounds) and named as ``where.key`` in errors.
    A class may keep old key names working with a mapping ``RENAMED = {old: new}`` (a class
    attribute, not a field): the old key is read as the new one, with a deprecation line.
    """
    if data is not None and not isinstance(data, Mapping):
        raise SettingError(f"{where}: expected a mapping, got {data!r}")
    data = dict(data or {})
    for old, new in getattr(cls, "RENAMED", {}).items():  # old spellings that still work
        if old in data:
            deprecated(f"{where + '.' if where else ''}{old}: write "
                       f"{where + '.' if where else ''}{new}")
            if new not in data:
                data[new] = data[old]
            del data[old]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown_keys(data, fields, where)
    hints = _hints(cls)
    kwargs = {}
    for k, v in data.items():
        value = convert(hints[k], v, k, where)
        check_bounds(value, fields[k].metadata, where, k)
        kwargs[k] = value
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SettingError.at(where, missing[0], "missing")
    try:
        return cls(**kwargs)
    except SettingError as exc:
        if exc.owner != cls.__name__:  # about a setting nested elsewhere: named already
            raise
        raise exc.moved(where) from None


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


def describe(cls: type, prefix: str = "", width: int = 30, defaults: Any = None,
             shown: Mapping[str, str] | None = None) -> list[str]:
    """One line per key of dataclass ``cls`` (nested dataclasses as dotted keys): the key, its
    default and its help, e.g. ``prune.tau = 0.1   cut-off of the fixed rule``. A nested
    dataclass's defaults are those of the parent's default object (``defaults``). Map-valued
    fields whose items are dataclasses (named sets, variants) list the item's keys under
    ``KEY.NAME.``. ``shown`` replaces the default shown for a dotted key (say one taken from
    another section)."""
    shown = shown or {}
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
                              default if dataclasses.is_dataclass(default) else None, shown)
            continue
        args = typing.get_args(tp)
        if typing.get_origin(tp) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
            lines.append(f"{key}.NAME:".ljust(width) + f"  {help_text}")
            lines += describe(args[1], key + ".NAME.", width, None, shown)
            continue
        value = to_mapping(default)
        text = "null" if value is None else str(value).replace("True", "true").replace(
            "False", "false").replace("None", "null").replace("'", "")
        lines.append(f"{key} = {shown.get(key, text)}".ljust(width) + f"  {help_text}")
    return lines
