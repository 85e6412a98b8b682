"""Stage 2, causal attention distillation: :func:`teacher_cache`, :func:`distill_arguments`,
:func:`distill`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leaf.data.jsonl import Records
from leaf.errors import LeafError
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
    import torch

    from leaf import distributed
    from leaf.distill.cache import write_teacher_cache
    from leaf.distill.data import DistillDataset
    from leaf.distill.recipe import load_teacher
    from leaf.models import load_config, load_tokenizer, resolve_device

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
# distillation settings

_SCALARS = (int, float, bool)


def _scalar_type(tp: Any) -> Any:
    """``int``, ``float`` or ``bool`` (optionally ``| None``), else None: the field types whose
    non-string config values are checked here (strings are parsed by the argument parser)."""
    import types
    import typing

    if tp in _SCALARS:
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and args[0] in _SCALARS:
            return tp
    return None


def _override_keys(overrides: Sequence[str]) -> set[str]:
    """The field names given in ``--name value`` / ``--name=value`` overrides."""
    return {o[2:].split("=", 1)[0].replace("-", "_") for o in overrides if o.startswith("--")}


def _name(key: str, overrides: Sequence[str], where: str) -> str:
    """How a message names a setting: ``--key`` when an override set it, else ``where.key``."""
    return f"--{key}" if key in _override_keys(overrides) else f"{where}.{key}"


def _key_in(message: str, config: Mapping[str, Any], overrides: Sequence[str],
            known: set[str]) -> str | None:
    """The setting a DistillArguments error is about: a field named in the message, else one
    whose given value the message quotes."""
    given = [k for k in (*_override_keys(overrides), *config) if k in known]
    for key in given:
        if re.search(rf"(?<![\w-]){re.escape(key)}(?!\w)", message):
            return key
    for key in config:
        value = config[key]
        if isinstance(value, str) and value and re.search(
                rf"(?<!\w){re.escape(value)}(?!\w)", message):
            return key
    return None


def distill_arguments(config: Mapping[str, Any], overrides: Sequence[str] = (),
                      where: str = "config") -> DistillArguments:
    """``DistillArguments`` from a config mapping (leaf's fields and any
    ``transformers.TrainingArguments`` field) and ``--name value`` overrides, which win.

    An unknown key, a value of the wrong type or one the arguments refuse raises
    :class:`SettingError` naming it (``where.key``, or ``--key`` for an override).
    """
    import dataclasses
    import typing

    from transformers import HfArgumentParser

    from leaf.distill.config import DistillArguments

    if not isinstance(config, Mapping):
        raise SettingError(f"{where}: expected a mapping of field: value, got "
                           f"{type(config).__name__}")
    overrides = [str(o) for o in overrides]
    known = {f.name for f in dataclasses.fields(DistillArguments) if f.init}
    for key in config:
        if key not in known:
            raise SettingError(f"{where}.{key}: unknown field{did_you_mean(str(key), known)} "
                               "(`leaf distill --show-fields` lists them)")
    hints = typing.get_type_hints(DistillArguments)
    for key, value in config.items():
        tp = _scalar_type(hints.get(key))
        if tp is not None and not isinstance(value, str):
            convert(tp, value, f"{where}.{key}")

    class Parser(HfArgumentParser):
        def error(self, message: str):  # argparse would print usage and exit
            m = re.match(r"argument --([\w-]+?)(?:/--[\w-]+)*: (.*)", message)
            if m:
                key = m.group(1).replace("-", "_")
                raise SettingError(f"{_name(key, overrides, where)}: {m.group(2)}")
            raise SettingError(f"{where}: {message}")

    parser = Parser(DistillArguments)
    parser.set_defaults(**config)
    try:
        args, rest = parser.parse_args_into_dataclasses(args=overrides,
                                                        return_remaining_strings=True)
    except (ValueError, TypeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        key = _key_in(message, config, overrides, known)
        raise SettingError(f"{_name(key, overrides, where) if key else where}: {message}"
                           ) from None
    if rest:
        flag = next((r for r in rest if r.startswith("--")), None)
        hint = did_you_mean(flag[2:].split("=", 1)[0], known) if flag else ""
        raise SettingError(f"unrecognized arguments: {' '.join(rest)}{hint}")
    from leaf.testbed.assets import resolve_model

    for key in ("teacher_model", "student_model"):  # testbed:FAMILY/ROLE, as in run configs
        if getattr(args, key):
            setattr(args, key, resolve_model(getattr(args, key)))
    _check_report_to(args.report_to, _name("report_to", overrides, where))
    return args


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
    from leaf.distill.config import DistillArguments
    from leaf.distill.recipe import train

    if not isinstance(args, DistillArguments):
        raise SettingError(f"args: expected DistillArguments (leaf.stages.distill_arguments), "
                           f"got {type(args).__name__}")
    if not args.output_dir:
        raise LeafError("set output_dir in the config or with --output_dir")
    return train(args)
