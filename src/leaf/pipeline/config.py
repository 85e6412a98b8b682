"""The ``leaf run`` configuration: one YAML file names everything a run depends on.

The file (plus ``--quick`` and every ``--set KEY=VALUE``) is parsed into a :class:`RunConfig`
when it is loaded, before any stage runs: an unknown key (with a "did you mean"), a value of the
wrong type or out of range stops the run with one message naming the dotted key. The stage
options are built from it then, so what a stage runs with is what ``results.json`` reports.

Keys (every one optional except the data; defaults below)::

    name: digit_sum
    data:
      testbed: digit_sum      # a family of leaf.testbed.tasks: generate the splits below, or
      train: train.jsonl      # ... give the files yourself (paths relative to this config;
                              # also .json/.csv/.parquet, a save_to_disk dir, hub NAME:SPLIT)
      columns: null           # with files: leaf field -> column, e.g. {instruction: question}
      tests: {test_id: a.jsonl, test_anti: b.jsonl, test_clean: c.jsonl}
      seed: 0                 # testbed only: generation seed, distillation-data bias, sizes
      bias: 0.95
      clean_frac: 0.0         # share of distillation samples without a distractor
      sizes: {train: 1000, test_id: 200, test_anti: 200, test_clean: 200}
                              # + distractor-shift splits, made only when named: test_anti_moved,
                              # test_anti_two, test_anti_topic (leaf.testbed.tasks.SHIFT_SPLITS)
    seeds: [0, 1, 2]          # replicates: testbed splits (data.seed + seed), random masking
                              # and distillation are seeded per replicate; files are shared
    teacher: testbed:digit_sum/teacher   # a model dir, a hub id, or testbed:FAMILY/ROLE
    student: testbed:digit_sum/student
    runtime:                  # every stage's device and dtype, unless its section sets its own;
      device: cpu             # distillation included: cpu trains on the CPU (use_cpu),
      dtype: float32          # bfloat16 / float16 train with bf16 / fp16 mixed precision
      threads: null           # torch CPU threads for the whole run (1 is fastest for tiny models)
    parallel:                 # run these stages on N data-parallel ranks (torchrun, one node);
      processes: 1            # same bytes as one process, so changing it re-runs nothing
      stages: [screen, detect, prune, eval]
      launcher_args: [--standalone]
    screen:   {batch_size: 64, max_new_tokens: 512}  # leaf.stages.GenerationOptions (also used
    evaluate: {batch_size: 64, max_new_tokens: 512}  # by verification); any of its fields
    detect:  {levels: [instruction, response], segments: 2, batch_size: 16, score_all: false,
              skip_last: 0}   # levels, then any field of leaf.stages.DetectOptions but level
    prune:   {threshold_mode: fixed, tau: 0.10, quantile: 0.05, seed: 0}   # PruneOptions' own
    counterfactuals:          # named sets, each one prune run on one level's scores; a set may
                              # override threshold_mode, tau, quantile and seed
      instruction_span: {level: instruction, masking: gradient, strategy: span, verify: true}
      planted_all: {masking: planted, rows: all}   # rows: scored (default) or all (planted only)
    distill:
      hybrid_lambda: 0.5      # lambda of variants that have counterfactual sets (paired mixing)
      args: {max_steps: 400, learning_rate: 1.0e-3}   # any leaf distill / TrainingArguments key;
                              # mixing is uniform unless args say `mixing: paired`
      variants:               # name -> counterfactual sets added to the original samples
        kd: {sets: [], hybrid_lambda: 1.0}   # KD w/o mask (a variant without sets: 1.0)
        leaf_instr: [instruction_span]       # short form: the sets, distill.hybrid_lambda
        extra_kd_hard: {extra_originals: instruction_span}   # copies of the kept rows' originals
        extra_kd_random: {extra_originals: instruction_span, extra_draw: random}  # as many, drawn
                                             # uniformly from all originals (seeded per replicate)
    detection:                # score pruned spans against the testbed's planted spans
      rules: {gradient: instruction_span}
    attention:                # students' attention on the planted distractor -> attention.json
      {enabled: null (auto: on for testbed data), split: test_anti, limit: 100, part: distractor,
       reliance: true}        # and how often answers follow a swapped distractor
    quick: {...}              # merged over everything above by --quick
    demo: true                # `leaf demo` runs this bundled config by default

Paths are relative to the config file; ``leaf:REL`` is relative to the installed ``leaf``
package (its bundled configs and testbed assets).

Every section is made of the stage options' own fields (:mod:`leaf.stages.options`,
:class:`leaf.detect.counterfactuals.PruneOptions`): their types, ranges, defaults and help are
declared there once, and where a run deliberately uses another default than the command (the
generation and detect batch sizes) the option's field says so (``setting(run=...)``);
``max_new_tokens`` is 512 in both, and an answer cut there is counted and graded wrong. Old
spellings still work, with a one-line deprecation message: the top-level ``device``,
``dtype`` and ``threads`` (now under ``runtime``) and ``detect.all`` (now
``detect.score_all``, as in :class:`leaf.stages.DetectOptions`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from leaf.data.readers import FORMATS_HELP, is_table
from leaf.errors import LeafError
from leaf.models import resolve_model_name
from leaf.settings import (
    Checked,
    SettingError,
    deprecated,
    fields_of,
    from_mapping,
    run_defaults,
    setting,
    to_mapping,
)
from leaf.stages.options import (
    DEVICE_HELP,
    DetectOptions,
    GenerationOptions,
    PruneOptions,
    VerifyOptions,
    check_device,
)

if TYPE_CHECKING:
    from leaf.distill.config import DistillArguments

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SPLIT_LABELS = {
    "test_id": "in-distribution",
    "test_anti": "anti-correlated",
    "test_clean": "clean",
    "test_anti_moved": "anti, moved",
    "test_anti_two": "anti, two distractors",
    "test_anti_topic": "anti, in-topic",
}
LABELS = {  # table rows
    "teacher": "Teacher",
    "student": "Student (Pre-KD)",
    "kd": "KD w/o mask",
    "leaf_instr": "LeaF (instruction)",
    "leaf_instr_resp": "LeaF (instruction + response)",
    "leaf_collective": "LeaF (instruction, collective pruning)",
    # the study's variants (docs/study.md)
    "leaf": "LeaF (gradient, tau 0.10)",
    "leaf_t05": "LeaF (gradient, tau 0.05)",
    "leaf_t15": "LeaF (gradient, tau 0.15)",
    "leaf_quantile": "LeaF (gradient, released quantile rule)",
    "leaf_resp": "LeaF (instruction + response)",
    "ppl": "PPL masking",
    "random": "random masking",
    "collective": "LeaF (collective pruning)",
    "planted": "planted removal (oracle)",
    "extra_kd": "extra KD rows, student-wrong originals (control)",  # the old extra_kd_hard
    "extra_kd_hard": "extra KD rows, student-wrong originals (control)",
    "extra_kd_random": "extra KD rows, random originals (control)",
    "unverified": "LeaF without verification (control)",
    "planted_all": "planted removal from every row (oracle)",
    "leaf_uniform": "LeaF (tau 0.10, uniform mixing)",
}
Level = Literal["instruction", "response"]
# distill.args keys the pipeline sets itself, and where to set them instead
RESERVED_DISTILL_ARGS = {
    "hybrid_lambda": "distill.hybrid_lambda or distill.variants.NAME.hybrid_lambda",
    "seed": "seeds", "output_dir": "the run directory", "teacher_model": "teacher",
    "student_model": "student", "train_file": "distill.variants",
    "use_counterfactuals": "distill.variants",
}


@dataclass
class DataConfig(Checked):
    testbed: str | None = setting(None, help="testbed family whose splits are generated")
    train: str | None = setting(None, help=f"training samples when not a testbed: {FORMATS_HELP}")
    tests: dict[str, str] | None = setting(
        None, help="test split name -> bench file (any format train takes)")
    seed: int = setting(0, help="testbed generation seed (plus the replicate's seed)")
    bias: float = setting(0.95, ge=0.0, le=1.0,
                          help="testbed: share of distillation samples whose distractor agrees")
    sizes: dict[str, int] | None = setting(None, ge=0, help="testbed split sizes")
    clean_frac: float = setting(0.0, ge=0.0, le=1.0,
                                help="testbed: share of distillation samples with no distractor")
    columns: dict[str, str] | None = setting(
        None, help="leaf field -> column of train and tests (e.g. instruction: question); a "
                   "quoted value is a constant for every row (task: \"'math'\")")


#: the PruneOptions fields a run sets once (``prune:``) and a counterfactual set may override
PRUNE_DEFAULTS = ("threshold_mode", "tau", "quantile", "seed")
#: keys the runtime section gives every stage section that has them, unless it sets its own
RUNTIME_KEYS = ("device", "dtype")


@dataclass
class RuntimeConfig(Checked):
    """Where and how every stage runs, distillation included."""

    device: str = setting("cpu", help=f"every stage's device: {DEVICE_HELP}; distillation "
                                      "trains on the CPU (use_cpu) with cpu, else on the GPUs")
    dtype: Literal["float32", "bfloat16", "float16"] = setting(
        "float32", help="every stage's weights' dtype; distillation: bfloat16 / float16 train "
                        "with bf16 / fp16 mixed precision (float32 master weights, the frozen "
                        "teacher in that dtype)")
    threads: int | None = setting(None, ge=1, help="torch CPU threads for the whole run")

    def check(self) -> None:
        check_device(self.device, "RuntimeConfig")


@dataclass
@fields_of(DetectOptions, exclude=("level",))
class DetectConfig(Checked):
    """The detect stages: the levels scored, then :class:`DetectOptions`' fields."""

    RENAMED = {"all": "score_all"}  # old key -> its name now (as DetectOptions names it)

    levels: list[Level] = setting(default_factory=lambda: ["instruction", "response"],
                                  help="levels scored, one detect stage each")

    def check(self) -> None:
        if not self.levels or len(set(self.levels)) != len(self.levels):
            raise SettingError.at("DetectConfig", "levels", f"a non-empty list of distinct "
                                  f"levels, got {self.levels}")

    def options(self, level: str) -> DetectOptions:
        """The options of the detect stage of ``level``."""
        values = {f.name: getattr(self, f.name) for f in fields(DetectOptions)
                  if f.name != "level"}
        return DetectOptions(level=level, **values)


@dataclass
@fields_of(PruneOptions, PRUNE_DEFAULTS)
class PruneDefaults(Checked):
    """The pruning rule of every counterfactual set unless the set overrides it."""


@dataclass
@fields_of(PruneOptions, PRUNE_DEFAULTS, optional=True, help="overrides prune.{name}")
@fields_of(PruneOptions, ("strategy", "masking"))
class CounterfactualSet(Checked):
    """One prune run on one level's scores."""

    level: Level = setting("instruction", help="which scores the set prunes")
    verify: bool = setting(False, help="keep only counterfactuals both models answer")
    rows: Literal["scored", "all"] = setting(
        "scored", help="which distillation rows are pruned: scored (those detect scored, the "
                       "screened teacher-right/student-wrong ones) or all (every training row; "
                       "masking 'planted' only: the all-row oracle)")


@dataclass
class Variant(Checked):
    sets: list[str] = setting(default_factory=list, help="counterfactual sets it trains on")
    extra_originals: str | None = setting(
        None, help="a counterfactual set: add as many unpruned copies of originals as it keeps "
                   "counterfactuals (the 'extra KD rows' controls; which originals: extra_draw)")
    extra_draw: Literal["hard", "random"] = setting(
        "hard", help="with extra_originals, which originals are copied: hard, the originals of "
                     "the counterfactuals the set keeps (student-wrong rows, nearly all with a "
                     "misleading distractor); random, drawn uniformly from all training "
                     "originals, seeded per replicate")
    hybrid_lambda: float | None = setting(
        None, ge=0.0, le=1.0, help="its lambda (default: distill.hybrid_lambda with sets, 1.0 "
                                   "without: KD w/o mask)")
    args: dict[str, Any] = setting(default_factory=dict,
                                   help="leaf distill fields for this variant, over distill.args")


@dataclass
class DistillConfig(Checked):
    hybrid_lambda: float = setting(0.5, ge=0.0, le=1.0, help="lambda of variants with sets")
    args: dict[str, Any] = setting(default_factory=dict, help="leaf distill fields")
    variants: dict[str, Variant] = setting(
        default_factory=lambda: {"kd": Variant(), "leaf_instr": Variant(["instruction_span"])},
        help="variant name -> its sets and lambda")


@dataclass
class DetectionConfig(Checked):
    rules: dict[str, str] = setting(default_factory=dict, help="rule name -> counterfactual set")


@dataclass
class AttentionConfig(Checked):
    enabled: bool | None = setting(None, help="null: on for testbed data")
    split: str = setting("test_anti", help="test split measured")
    limit: int | None = setting(100, ge=1, help="samples measured per model")
    part: Literal["distractor", "misleading"] = setting("distractor", help="planted part")
    reliance: bool = setting(True, help="also measure causal reliance: each student answers "
                                        "every anti-correlated item with its distractor's "
                                        "value swapped and removed (leaf.evaluate.reliance)")


@dataclass
class ParallelConfig(Checked):
    processes: int = setting(1, ge=1, help="data-parallel ranks (torchrun) for the stages "
                                           "below; 1: in the leaf run process")
    stages: list[Literal["screen", "detect", "prune", "eval"]] = setting(
        default_factory=lambda: ["screen", "detect", "prune", "eval"],
        help="stages run on `processes` ranks (prune: only sets with verify)")
    launcher_args: list[str] = setting(
        default_factory=lambda: ["--standalone"],
        help="extra torchrun arguments (default --standalone: a free local port)")


@dataclass
class RunConfig(Checked):
    """A whole ``leaf run``: every stage's settings, typed and checked."""

    name: str = setting("run", help="run name (default run directory runs/NAME)")
    description: str | None = setting(None, help="a line for people")
    demo: bool = setting(False, help="`leaf demo` runs this bundled config by default")
    data: DataConfig = setting(default_factory=DataConfig, help="training and test data")
    seeds: list[int] = setting(default_factory=lambda: [0], help="replicates")
    teacher: str | None = setting(None, help="teacher model")
    student: str | None = setting(None, help="student model")
    runtime: RuntimeConfig = setting(default_factory=RuntimeConfig,
                                     help="device, dtype and threads of every stage")
    parallel: ParallelConfig = setting(default_factory=ParallelConfig,
                                       help="data-parallel stage 1 and evaluation (torchrun)")
    screen: GenerationOptions = setting(default_factory=lambda: run_defaults(GenerationOptions),
                                        help="screening and verification generation")
    detect: DetectConfig = setting(default_factory=DetectConfig, help="detection")
    prune: PruneDefaults = setting(default_factory=PruneDefaults, help="pruning defaults")
    counterfactuals: dict[str, CounterfactualSet] = setting(
        default_factory=lambda: {"instruction_span": CounterfactualSet(verify=True)},
        help="named counterfactual sets")
    distill: DistillConfig = setting(default_factory=DistillConfig, help="distillation")
    evaluate: GenerationOptions = setting(default_factory=lambda: run_defaults(GenerationOptions),
                                          help="evaluation generation")
    detection: DetectionConfig = setting(default_factory=DetectionConfig,
                                         help="detection against planted spans")
    attention: AttentionConfig = setting(default_factory=AttentionConfig,
                                         help="attention on the planted distractor")
    quick: dict[str, Any] | None = setting(None, help="merged over the rest by --quick")
    # set by load_config, not by the file
    is_quick: bool = field(default=False, init=False)
    config_path: str | None = field(default=None, init=False)

    # -- the run's layout ------------------------------------------------------------------
    def replicates(self) -> dict[int, str]:
        """Seed -> data key. Testbed data is drawn anew for every seed (``data<k>``: splits
        with seed ``data.seed + k``); data given as files is shared by all seeds (``data``)."""
        if self.data.testbed:
            return {s: f"data{s}" for s in self.seeds}
        return {s: "data" for s in self.seeds}

    def model_keys(self) -> list[tuple[str, str]]:
        """``(model, data key)`` for every evaluation: teacher and student (pre-KD) on every
        data replicate, then each distilled ``variant-s<seed>`` on its own seed's replicate."""
        reps = self.replicates()
        keys = [(m, d) for d in dict.fromkeys(reps.values()) for m in ("teacher", "student")]
        for variant in self.distill.variants:
            keys += [(f"{variant}-s{seed}", reps[seed]) for seed in self.seeds]
        return keys

    def test_splits(self) -> list[str]:
        if self.data.testbed:
            from leaf.testbed.tasks import ALL_SPLITS, DEFAULT_SIZES  # heavy: numpy

            merged = {**DEFAULT_SIZES, **(self.data.sizes or {})}
            return [s for s in ALL_SPLITS if s != "train" and merged.get(s)]
        return list(self.data.tests)

    # -- what the stages run with ---------------------------------------------------------
    def lambda_of(self, variant: str) -> float:
        v = self.distill.variants[variant]
        return v.hybrid_lambda if v.hybrid_lambda is not None else \
            (self.distill.hybrid_lambda if v.sets or v.extra_originals else 1.0)

    def mixing_of(self, variant: str) -> str:
        """How the variant's batches mix originals and counterfactuals (``uniform``, leaf's
        default, unless its args or distill.args say otherwise)."""
        from leaf.distill.mixing import DEFAULT_MIXING  # heavy: numpy

        args = {**self.distill.args, **self.distill.variants[variant].args}
        return args.get("mixing", DEFAULT_MIXING)

    def detect_options(self, level: str) -> DetectOptions:
        return self.detect.options(level)

    def prune_options(self, name: str, seed: int) -> PruneOptions:
        """Set ``name``'s options: its own values over ``prune``'s; its seed is the set's (or
        prune's) seed plus ``seed``."""
        s = self.counterfactuals[name]
        values = {k: getattr(self.prune, k) if getattr(s, k) is None else getattr(s, k)
                  for k in PRUNE_DEFAULTS}
        values["seed"] += seed
        return PruneOptions(strategy=s.strategy, masking=s.masking, **values)

    def verify_options(self) -> VerifyOptions:
        return VerifyOptions(teacher=self.teacher, student=self.student,
                             generation=self.screen)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as written to ``config.json`` and reported in ``results.json``."""
        out = to_mapping(self)
        out.pop("quick", None)
        return out


def group_of(key: str) -> str:
    """Table row of an evaluated model key: ``student`` -> ``student``, ``kd-s1`` -> ``kd``."""
    return key if key in ("teacher", "student") else key.rsplit("-s", 1)[0]


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base`` key by key (dicts merge, everything else is
    replaced)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_path(value: str | None, base: Path, *, is_file: bool = False) -> str | None:
    """A config path made absolute: ``leaf:`` -> package dir; relative -> ``base``.

    A model name with a registered scheme (``testbed:FAMILY/ROLE``, a shipped testbed checkpoint:
    :func:`leaf.models.resolve_model_name`) is resolved. A value that is neither an existing
    path nor prefixed is returned as given (a hub id such as ``org/model``).
    """
    if value is None:
        return None
    value = str(value)
    if value.startswith("leaf:"):
        return str(PACKAGE_DIR / value[len("leaf:"):])

    named = resolve_model_name(value)  # testbed:FAMILY/ROLE and any other registered scheme
    if named != value:
        return named
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = base / p
    if is_file or candidate.exists() or value.startswith("."):
        return str(candidate.resolve())
    return value


def _resolve_data(value: str, base: Path) -> str:
    """A data file or directory relative to ``base``; a hub ``NAME:SPLIT`` as given."""

    if not (base / value).exists() and not Path(value).expanduser().is_absolute() \
            and is_table(value) and ":" in value:
        return value
    return resolve_path(value, base, is_file=True)


def read_yaml_mapping(path: Path) -> dict:
    import yaml  # heavy: yaml

    if not path.is_file():
        raise LeafError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LeafError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise LeafError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(path: str | Path, *, quick: bool = False,
                overrides: dict | None = None) -> RunConfig:
    """Read one run config, apply ``quick:`` (with ``quick``) and the ``--set`` overrides,
    and check all of it. Raises :class:`SettingError` naming the file and the key."""
    path = Path(path)
    raw = read_yaml_mapping(path)
    merged = {k: v for k, v in raw.items() if k != "quick"}
    if quick and raw.get("quick"):
        merged = deep_merge(merged, raw["quick"])
    if overrides:
        merged = deep_merge(merged, overrides)
    source = f"{path}{' (with --set)' if overrides else ''}"
    try:
        cfg = _typed(merged, path)
        if raw.get("quick") is not None and not quick:  # a typo there must not wait for --quick
            if not isinstance(raw["quick"], dict):
                raise SettingError(f"quick: expected a mapping, got {raw['quick']!r}")
            _typed(deep_merge(merged, raw["quick"]), path, where="quick")
    except LeafError as exc:
        raise SettingError(f"{source}: {exc}") from None
    cfg.quick = raw.get("quick")
    cfg.is_quick = bool(quick)
    cfg.config_path = str(path.resolve())
    return cfg


def _typed(mapping: dict, path: Path, where: str = "") -> RunConfig:
    """A checked :class:`RunConfig` from a merged mapping (``where`` prefixes messages)."""
    mapping = copy.deepcopy(mapping)
    mapping.pop("quick", None)
    distill = mapping.get("distill")
    if isinstance(distill, dict) and isinstance(distill.get("variants"), dict):
        # short form: `name: [set, ...]`
        distill["variants"] = {k: {"sets": v} if isinstance(v, list) or v is None else v
                               for k, v in distill["variants"].items()}
        for v in distill["variants"].values():
            if isinstance(v, dict) and v.get("sets") is None:
                v["sets"] = []
    _runtime_section(mapping, where)
    runtime = mapping.get("runtime")
    runtime = runtime if isinstance(runtime, dict) else {}
    for section in ("screen", "evaluate", "detect"):  # the runtime's device and dtype and the
        sec = mapping.get(section)                    # run's defaults, unless set there
        if sec is None or isinstance(sec, dict):
            sec = dict(sec or {})
            for key in RUNTIME_KEYS:
                sec.setdefault(key, runtime.get(key, _RUNTIME_DEFAULTS[key]))
            if section != "detect":
                for key, value in to_mapping(run_defaults(GenerationOptions)).items():
                    sec.setdefault(key, value)
            mapping[section] = sec
    prefix = f"{where}." if where else ""
    try:
        cfg = from_mapping(RunConfig, mapping, "")
    except SettingError as exc:
        raise SettingError(prefix + str(exc)) from None
    try:
        _check_and_resolve(cfg, path)
    except SettingError as exc:
        raise SettingError(prefix + str(exc)) from None
    return cfg


_RUNTIME_DEFAULTS = to_mapping(RuntimeConfig())


def _runtime_section(mapping: dict, where: str) -> None:
    """The old top-level ``device``, ``dtype`` and ``threads`` moved under ``runtime:`` (where
    ``runtime`` does not set them), with a one-line deprecation message."""
    old = [k for k in ("device", "dtype", "threads") if k in mapping]
    if not old:
        return
    runtime = mapping.get("runtime")
    if runtime is not None and not isinstance(runtime, dict):
        return  # from_mapping names the bad section
    runtime = dict(runtime or {})
    prefix = f"{where}." if where else ""
    deprecated(f"{prefix}{', '.join(old)} at the top of a run config: write them under "
               f"{prefix}runtime: ({', '.join(f'runtime.{k}' for k in old)})")
    for key in old:
        runtime.setdefault(key, mapping.pop(key))
    mapping["runtime"] = runtime


def _check_and_resolve(cfg: RunConfig, path: Path) -> None:
    """Rules that tie sections together; paths and models resolved; stage options built."""
    base = path.resolve().parent
    data = cfg.data
    if data.testbed:
        from leaf.testbed.tasks import ALL_SPLITS, FAMILIES, SHIFT_SPLITS  # heavy: numpy

        if data.testbed not in FAMILIES:
            raise SettingError(f"data.testbed: unknown family {data.testbed!r}; known: "
                               f"{sorted(FAMILIES)}")
        unknown = set(data.sizes or {}) - set(ALL_SPLITS)
        if unknown:
            raise SettingError(f"data.sizes.{sorted(unknown)[0]}: unknown split; known: "
                               f"{list(ALL_SPLITS)}")
        for split, n in (data.sizes or {}).items():
            layout = SHIFT_SPLITS.get(split)
            if n and layout and layout not in FAMILIES[data.testbed].layouts:
                raise SettingError(f"data.sizes.{split}: the {data.testbed} family cannot "
                                   f"express this split's {layout!r} distractor layout")
        cfg.teacher = cfg.teacher or f"testbed:{data.testbed}/teacher"
        cfg.student = cfg.student or f"testbed:{data.testbed}/student"
    else:
        if not data.train or not data.tests:
            raise SettingError("data: give either `testbed: FAMILY` or both `train:` and "
                               "`tests:`")
        data.train = _resolve_data(data.train, base)
        data.tests = {k: _resolve_data(v, base) for k, v in data.tests.items()}
    for role in ("teacher", "student"):
        if not getattr(cfg, role):
            raise SettingError(f"{role}: missing (a model directory or hub id)")
        try:
            setattr(cfg, role, resolve_path(getattr(cfg, role), base))
        except LeafError as exc:
            raise SettingError(f"{role}: {exc}") from None
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise SettingError(f"seeds: a non-empty list of distinct integers, got {cfg.seeds}")

    levels = cfg.detect.levels
    for name, spec in cfg.counterfactuals.items():
        if spec.level not in levels:
            raise SettingError(f"counterfactuals.{name}.level: {spec.level!r} is not in "
                               f"detect.levels {levels}")
        if spec.masking == "planted" and spec.level != "instruction":
            raise SettingError(f"counterfactuals.{name}.level: planted spans are in the "
                               "instruction; masking 'planted' needs level instruction")
        if spec.rows == "all" and spec.masking != "planted":
            raise SettingError(f"counterfactuals.{name}.rows: 'all' prunes rows detect did not "
                               "score, so it needs masking 'planted' (the all-row oracle)")
        try:
            cfg.prune_options(name, 0)
        except SettingError as exc:
            raise SettingError(f"counterfactuals.{name}: {exc}") from None
    for variant, spec in cfg.distill.variants.items():
        missing = [s for s in spec.sets if s not in cfg.counterfactuals]
        if missing:
            raise SettingError(f"distill.variants.{variant}.sets: unknown counterfactual "
                               f"set(s) {missing}; known: {sorted(cfg.counterfactuals)}")
        if spec.extra_draw != "hard" and spec.extra_originals is None:
            raise SettingError(f"distill.variants.{variant}.extra_draw: needs extra_originals "
                               "(the set whose kept counterfactuals say how many copies)")
        if spec.extra_originals is not None and spec.extra_originals not in cfg.counterfactuals:
            raise SettingError(f"distill.variants.{variant}.extra_originals: unknown "
                               f"counterfactual set {spec.extra_originals!r}")
        if len(set(spec.sets)) != len(spec.sets):
            raise SettingError(f"distill.variants.{variant}.sets: a set is named twice")
    cfg.distill.variants = {k: replace(v, hybrid_lambda=cfg.lambda_of(k))
                            for k, v in cfg.distill.variants.items()}
    for rule, cset in cfg.detection.rules.items():
        if cset not in cfg.counterfactuals:
            raise SettingError(f"detection.rules.{rule}: unknown counterfactual set {cset!r}")
        if cfg.counterfactuals[cset].level != "instruction":
            raise SettingError(f"detection.rules.{rule}: planted spans are in the instruction; "
                               f"set {cset!r} must be instruction level")
    check_distill_args(cfg)


def check_distill_args(cfg: RunConfig) -> None:
    """``distill.args`` (and each variant's ``args``) must name fields of ``leaf distill`` the
    pipeline does not set itself, with values ``DistillArguments`` accepts (checked now, not
    when the stage is reached)."""
    places = {"distill.args": cfg.distill.args}
    places.update({f"distill.variants.{k}.args": v.args for k, v in cfg.distill.variants.items()})
    for where, args in places.items():
        for key in args:
            if key in RESERVED_DISTILL_ARGS:
                raise SettingError(f"{where}.{key}: set by the pipeline; use "
                                   f"{RESERVED_DISTILL_ARGS[key]}")
    checked: list[dict] = []
    for variant, spec in cfg.distill.variants.items():
        if spec.args in checked:  # variants with the same args differ only in what the
            continue              # pipeline sets, which is checked once
        checked.append(spec.args)
        variant_arguments(cfg, variant, 0, "unused")


def runtime_distill_args(cfg: RunConfig, args: dict[str, Any]) -> dict[str, Any]:
    """What ``runtime`` says to distillation, in ``TrainingArguments``' own words, where the
    variant's args do not say it themselves: device cpu -> ``use_cpu``; dtype bfloat16 /
    float16 -> ``bf16`` / ``fp16`` mixed precision (autocast over a student kept in float32,
    ``student_dtype``'s default) and the frozen teacher loaded in that dtype
    (``teacher_dtype``)."""
    rt, out = cfg.runtime, {}
    on_cpu = rt.device == "cpu" if "use_cpu" not in args else bool(args["use_cpu"])
    if rt.device == "cpu" and "use_cpu" not in args:
        out["use_cpu"] = True
    if rt.dtype != "float32" and "teacher_dtype" not in args:
        # the frozen teacher needs no float32 master copy: a float32 checkpoint kept in float32
        # under bf16 / fp16 training would hold twice the memory for the same autocast result
        out["teacher_dtype"] = rt.dtype
    if not {"bf16", "fp16"} & set(args):
        if rt.dtype == "bfloat16":
            out["bf16"] = True
        elif rt.dtype == "float16":
            if on_cpu:
                raise SettingError("runtime.dtype: float16 trains with fp16 mixed precision, "
                                   "which needs a GPU (runtime.device is cpu); use bfloat16 or "
                                   "float32 on the CPU")
            out["fp16"] = True
    return out


def distill_config(cfg: RunConfig, variant: str, seed: int, output_dir: str | Path,
                   train_file: str | Path = "train.jsonl") -> dict[str, Any]:
    """The ``leaf distill`` config of one variant and seed, as plain data (the run directory
    keeps it as ``config.yaml``, so that ``leaf distill config.yaml`` repeats the training):
    ``distill.args``, the variant's args, what ``runtime`` says (:func:`runtime_distill_args`)
    and what the pipeline sets (models, training file, the variant's lambda, seed, output
    directory)."""
    args = {**cfg.distill.args, **cfg.distill.variants[variant].args}
    return {
        **args, **runtime_distill_args(cfg, args),
        "teacher_model": cfg.teacher, "student_model": cfg.student,
        "train_file": str(train_file), "hybrid_lambda": cfg.lambda_of(variant),
        "use_counterfactuals": bool(cfg.distill.variants[variant].sets
                                    or cfg.distill.variants[variant].extra_originals),
        "output_dir": str(output_dir), "seed": seed,
    }


def variant_arguments(cfg: RunConfig, variant: str, seed: int, output_dir: str | Path,
                      train_file: str | Path = "train.jsonl") -> DistillArguments:
    """The typed ``DistillArguments`` of one variant and seed, made from
    :func:`distill_config`'s values directly; an error names the run-config key a value came
    from (``distill.args.KEY``, ``distill.variants.NAME.args.KEY``, ``runtime.dtype``, ...)."""
    from leaf.stages.distillation import build_distill_arguments  # heavy: numpy

    variant_args = cfg.distill.variants[variant].args
    names = {k: f"distill.args.{k}" for k in cfg.distill.args}
    names.update({k: f"distill.variants.{variant}.args.{k}" for k in variant_args})
    names.update(use_cpu=names.get("use_cpu", "runtime.device"),
                 bf16=names.get("bf16", "runtime.dtype"), fp16=names.get("fp16", "runtime.dtype"),
                 teacher_dtype=names.get("teacher_dtype", "runtime.dtype"),
                 hybrid_lambda=f"distill.variants.{variant}.hybrid_lambda",
                 teacher_model="teacher", student_model="student")
    where = f"distill.variants.{variant}.args" if variant_args else "distill.args"
    values = distill_config(cfg, variant, seed, output_dir, train_file)
    return build_distill_arguments(values, names, where)
