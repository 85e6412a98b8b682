"""Stage 2, causal attention distillation: :func:`teacher_cache`, :func:`distill_arguments`,
:func:`distill`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leaf import distributed
from leaf.data.jsonl import Records
from leaf.errors import LeafError
from leaf.models import load_config, load_tokenizer, resolve_device, resolve_model_name
from leaf.settings import SettingError, convert, did_you_mean
from leaf.stages._common import options_or_default
from leaf.stages.options import TeacherCacheOptions

if TYPE_CHECKING:
    from leaf.distill.config import DistillArguments
    from leaf.distill.trainer import DistillTrainer

__all__ = ["distill", "distill_arguments", "teacher_cache"]


def teacher_cache(teacher: str | Path, data: Records, out: str | Path,
                  options: TeacherCacheOptions | None = None) -> Path:
    """Run the teacher once over the training rows and keep its top-k logits per target token.

    ``data`` is what :func:`distill` trains on (``counterfactuals.jsonl``, or its rows), rendered
    with the student's tokenizer (``options.student``, default the teacher's) exactly as
    training renders it; point ``teacher_cache`` in the distillation config at ``out``. A rerun
    resumes an interrupted cache. Returns ``out``.
    """
    import torch  # heavy: torch

    from leaf.distill.cache import write_teacher_cache  # heavy: torch
    from leaf.distill.data import DistillDataset  # heavy: torch
    from leaf.distill.recipe import load_teacher  # heavy: torch

    options = options_or_default(options, TeacherCacheOptions)
    distributed.init()  # under a launcher: this process's GPUs, before CUDA starts
    teacher = str(teacher)
    source = options.student or teacher
    role = "student" if options.student else "teacher"
    tokenizer = load_tokenizer(source, role, padding_side=None)
    dataset = DistillDataset(data, tokenizer, options.max_length, options.system_prompt)
    vocab = load_config(source, role).vocab_size
    device = resolve_device(options.device)
    device_map = options.device_map  # as leaf.models.load_model: several GPUs share the teacher
    if device_map is None and device == "cuda" and torch.cuda.device_count() > 1:
        device_map = "auto"
    model = load_teacher(teacher, tokenizer, vocab, options.dtype, device_map,
                         None if device_map else device)
    return write_teacher_cache(model, tokenizer, dataset, out, options.top_k,
                               teacher_name=teacher, vocab_size=vocab,
                               batch_size=options.batch_size)


# ---------------------------------------------------------------------------------------------
# distillation settings: DistillArguments made from typed values, no argument-parser round trip


def _parse_text(tp: Any, text: str, name: str) -> Any:
    """A value written as text (a command-line override, or a YAML string such as ``2e-3``)
    read as field type ``tp``: bool, int or float where the type is one of those and not also
    str; an enum's value is checked against its members. Other text is kept as given."""
    import enum
    import types
    import typing

    members = [tp]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
    enums = [m for m in members if isinstance(m, type) and issubclass(m, enum.Enum)]
    for kind in enums:
        if text not in {str(e.value) for e in kind}:
            raise SettingError(f"{name}: {text} is not a valid {kind.__name__}, please select "
                               f"one of {[e.value for e in kind]}")
    if str in members or enums:
        return text
    if bool in members:
        if text.lower() in ("true", "yes", "y", "t", "1"):
            return True
        if text.lower() in ("false", "no", "n", "f", "0"):
            return False
        raise SettingError(f"{name}: expected true or false, got {text!r}")
    for kind in (int, float):
        if kind in members:
            try:
                return kind(text)
            except ValueError:
                raise SettingError(f"{name}: invalid {kind.__name__} value: {text!r}") from None
    return text


def _typed_value(tp: Any, value: Any, name: str) -> Any:
    """``value`` checked against field type ``tp``: text is parsed (:func:`_parse_text`), any
    other value is checked and passed on as written."""
    if isinstance(value, str):
        return _parse_text(tp, value, name)
    convert(tp, value, name)
    return value


def build_distill_arguments(values: Mapping[str, Any], names: Mapping[str, str],
                            where: str) -> DistillArguments:
    """``DistillArguments(**values)``, each value checked against its field's type first.

    An unknown key (with a "did you mean"), a value of the wrong type or one the arguments
    refuse raises :class:`SettingError` naming the setting as the caller calls it
    (``names[key]``, else ``where.key``); an error of ``TrainingArguments`` itself names
    ``where``. ``teacher_model`` / ``student_model`` may be ``testbed:FAMILY/ROLE``.
    """
    import dataclasses
    import typing

    from leaf.distill.config import DistillArguments  # heavy: transformers

    def name(key: str) -> str:
        return names.get(key, f"{where}.{key}")

    known = {f.name for f in dataclasses.fields(DistillArguments) if f.init}
    for key in values:
        if key not in known:
            raise SettingError(f"{name(key)}: unknown field{did_you_mean(str(key), known)} "
                               "(`leaf distill --show-fields` lists them)")
    hints = typing.get_type_hints(DistillArguments)
    typed = {k: _typed_value(hints[k], v, name(k)) for k, v in values.items()}
    for key in ("teacher_model", "student_model"):  # testbed:FAMILY/ROLE, as in run configs
        if typed.get(key):
            typed[key] = resolve_model_name(typed[key])
    try:
        args = DistillArguments(**typed)
    except SettingError as exc:  # leaf's own checks say which field
        if exc.field is None:
            raise
        raise exc.called(name(exc.field)) from None
    except (ValueError, TypeError) as exc:  # transformers' checks: the message names the field
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingError(f"{where}: {message}") from None
    _check_report_to(args.report_to, name("report_to"))
    return args


def _overrides(overrides: Sequence[str], known: set[str]) -> dict[str, Any]:
    """``--name value``, ``--name=value``, ``--name v1 v2`` (a list) and a bare ``--switch``
    (true), as ``{field: text}``; ``--hybrid-lambda`` is ``hybrid_lambda``."""
    out: dict[str, Any] = {}
    items = [str(o) for o in overrides]
    i = 0
    while i < len(items):
        token = items[i]
        key, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        key = key.replace("-", "_")
        if not key or key not in known:
            hint = did_you_mean(key, known) if key else ""
            raise SettingError(f"unrecognized arguments: {' '.join(items[i:])}{hint}")
        i += 1
        if eq:
            out[key] = value
            continue
        given = []
        while i < len(items) and not items[i].startswith("--"):
            given.append(items[i])
            i += 1
        out[key] = "true" if not given else given[0] if len(given) == 1 else given
    return out


def distill_arguments(config: Mapping[str, Any], overrides: Sequence[str] = (),
                      where: str = "config") -> DistillArguments:
    """``DistillArguments`` from a config mapping (leaf's fields and any
    ``transformers.TrainingArguments`` field) and ``--name value`` overrides, which win.

    An unknown key, a value of the wrong type or one the arguments refuse raises
    :class:`SettingError` naming it (``where.key``, or ``--key`` for an override).
    """
    import dataclasses

    from leaf.distill.config import DistillArguments  # heavy: transformers

    if not isinstance(config, Mapping):
        raise SettingError(f"{where}: expected a mapping of field: value, got "
                           f"{type(config).__name__}")
    known = {f.name for f in dataclasses.fields(DistillArguments) if f.init}
    given = _overrides(overrides, known)
    names = {k: f"--{k}" for k in given}
    return build_distill_arguments({**config, **given}, names, where)


#: report_to integrations: the modules any of which makes them work, and leaf's extra for them
_REPORTERS = {"wandb": (("wandb",), "wandb"), "tensorboard": (("tensorboard", "tensorboardX"),
                                                              "tensorboard"),
              "mlflow": (("mlflow",), None), "comet_ml": (("comet_ml",), None),
              "clearml": (("clearml",), None), "dvclive": (("dvclive",), None),
              "trackio": (("trackio",), None), "swanlab": (("swanlab",), None)}


def _check_report_to(report_to: Any, name: str) -> None:
    """Refuse a ``report_to`` integration whose package is not installed, naming what to
    install (transformers would fail later, inside the trainer, with a traceback)."""
    import importlib.util

    chosen = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for integration in chosen:
        modules, extra = _REPORTERS.get(integration, ((), None))
        if not modules or any(importlib.util.find_spec(m) for m in modules):
            continue
        how = f"pip install 'leaf-distill[{extra}]'" if extra else f"pip install {modules[0]}"
        raise SettingError(f"{name}: {integration} is not installed; {how} (or use "
                           "report_to: none)")


def distill(args: DistillArguments) -> DistillTrainer:
    """Train the student as ``args`` says (:func:`leaf.distill.recipe.train`): the final model
    and tokenizer, ``trainer_state.json`` and checkpoints land in ``args.output_dir``; a rerun
    resumes from the last checkpoint there."""
    from leaf.distill.config import DistillArguments  # heavy: transformers
    from leaf.distill.recipe import train  # heavy: torch

    if not isinstance(args, DistillArguments):
        raise SettingError(f"args: expected DistillArguments (leaf.stages.distill_arguments), "
                           f"got {type(args).__name__}")
    if not args.output_dir:
        raise LeafError("set output_dir in the config or with --output_dir")
    return train(args)
