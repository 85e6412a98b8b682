"""Command-line flags made from the stage options' fields, and options built from them.

:func:`add_option` declares a flag from one field of an option dataclass (its type, choices,
default and help: the field's own), and :func:`build` makes the options; its errors name the
flag, not the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from leaf.errors import LeafError
from leaf.models import resolve_model_name
from leaf.settings import SettingError, default_of, help_of

T = TypeVar("T")


def flag(field: str) -> str:
    """``max_new_tokens`` -> ``--max-new-tokens``."""
    return "--" + field.replace("_", "-")


def shown(value: Any) -> str:
    """A default as a help text shows it: ``0.1``, ``1e-05``, ``none``."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return " ".join(shown(v) for v in value)
    return str(value)


def option_help(cls: type, field: str, what: str = "", default: Any = dataclasses.MISSING) -> str:
    """A flag's help: ``what`` (say "with --verify: "), the field's help and its default (none
    for a switch or an unset default, which the field's help explains)."""
    if default is dataclasses.MISSING:
        default = default_of(cls, field)
    text = f"{what}{help_of(cls, field)}"
    return text if default is None or default is False else f"{text} (default {shown(default)})"


def add_option(parser, cls: type, field: str, name: str | None = None, *, what: str = "",
               **overrides: Any) -> argparse.Action:
    """Add the flag of option ``cls.field`` (``name``, default ``--field-name``): its type
    (``int | None`` -> int, a list -> ``nargs='+'``, bool -> a switch), choices of a
    ``Literal``, default and help all come from the field. ``overrides`` go to argparse as they
    are (say ``type=model_ref``); ``what`` prefixes the help. The action remembers the field
    (``action.option_field``) so that a test can hold the two together."""
    tp = typing.get_type_hints(cls)[field]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    kwargs: dict[str, Any] = {"default": default_of(cls, field)}
    if tp is bool:
        kwargs["action"] = "store_true"
    elif typing.get_origin(tp) is Literal:
        kwargs["choices"] = typing.get_args(tp)
    elif typing.get_origin(tp) is list:
        kwargs.update(type=typing.get_args(tp)[0], nargs="+")
    elif tp in (int, float):
        kwargs["type"] = tp
    kwargs.update(overrides)
    kwargs.setdefault("help", option_help(cls, field, what, kwargs["default"]))
    action = parser.add_argument(name or flag(field), **kwargs)
    action.option_field = (cls, field)
    return action


def build(cls: type[T], flags: Mapping[str, str] | None = None, **values: Any) -> T:
    """``cls(**values)``; a :class:`SettingError` names the flag of the field (``flags[field]``,
    else ``--field-name``) and, for a bound, the whole allowed range: ``--tau must be in
    [0, 1], got 2.0``. ``flags`` also names the flags of other settings a message mentions
    (``generation.temperature``)."""
    flags = dict(flags or {})
    try:
        return cls(**values)
    except SettingError as exc:
        if exc.owner != cls.__name__ or exc.field is None:
            raise
        raise exc.named(flags.get(exc.field, flag(exc.field)), flags) from None


# -- flags every model-loading subcommand spells the same way ----------------------------------

MODEL_HELP = "directory, hub id or testbed:FAMILY/ROLE (a shipped testbed checkpoint)"


def model_ref(value: str) -> str:
    """argparse ``type`` of a model flag: ``testbed:FAMILY/ROLE`` (as in run configs) becomes the
    shipped checkpoint's directory; a directory or hub id passes unchanged."""

    try:
        return resolve_model_name(value)
    except (LeafError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def device_arg(value: str) -> str:
    """argparse ``type`` of ``--device``: auto, cpu, cuda or cuda:N."""
    from leaf.stages.options import check_device  # heavy: numpy

    try:
        check_device(value, "", "--device")
    except SettingError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None
    return value


def add_device(parser, cls: type, what: str = "") -> argparse.Action:
    """``--device`` of option class ``cls``: the same values and meaning in every subcommand."""
    return add_option(parser, cls, "device", type=device_arg, metavar="DEVICE", what=what)


def add_dtype(parser, cls: type, what: str = "") -> argparse.Action:
    """``--dtype`` of option class ``cls`` (auto = the checkpoint's own dtype)."""
    return add_option(parser, cls, "dtype", what=what)


def quiet_environment() -> None:
    """Progress bars off (tqdm, the hub) for runs whose stages log to a file; must run before
    tqdm is imported, which reads TQDM_DISABLE once."""
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def live_terminal(args: argparse.Namespace):
    """The stream for ``leaf run``'s one live progress line: stdout when it is a terminal and
    ``--verbose`` is off; None (a line per stage event, as in a log file) otherwise."""
    if getattr(args, "verbose", False):
        return None
    stream = sys.stdout
    return stream if stream is not None and stream.isatty() else None
