"""The ``leaf run`` configuration: one YAML file names everything a run depends on.

Keys (defaults in :data:`DEFAULTS`; anything not given takes its default)::

    name: digit_sum
    data:
      testbed: digit_sum      # a family of leaf.testbed.tasks: generate the splits below, or
      train: train.jsonl      # ... give the files yourself (paths relative to this config)
      tests: {test_id: a.jsonl, test_anti: b.jsonl, test_clean: c.jsonl}
      seed: 0                 # testbed only: generation seed, distillation-data bias, sizes
      bias: 0.95
      sizes: {train: 1000, test_id: 200, test_anti: 200, test_clean: 200}
    seeds: [0, 1, 2]          # replicates: testbed splits (data.seed + seed), random masking
                              # and distillation are seeded per replicate; files are shared
    teacher: testbed:digit_sum/teacher   # a model dir, a hub id, or testbed:FAMILY/ROLE
    student: testbed:digit_sum/student
    device: cpu               # passed to every stage
    dtype: float32
    threads: null             # torch CPU threads for the whole run (1 is fastest for tiny models)
    screen:  {batch_size: 64, max_new_tokens: 32}
    detect:  {levels: [instruction, response], segments: 2, batch_size: 16, all: false}
    prune:   {threshold_mode: fixed, tau: 0.10, quantile: 0.05, seed: 0}
    counterfactuals:          # named sets, each one `leaf prune` run on one level's scores
      instruction_span: {level: instruction, masking: gradient, strategy: span, verify: true}
    distill:
      hybrid_lambda: 0.5
      args: {max_steps: 400, learning_rate: 1.0e-3}   # any leaf distill / TrainingArguments key
      variants:               # name -> counterfactual sets added to the original samples
        kd: []
        leaf_instr: [instruction_span]
    evaluate: {batch_size: 64, max_new_tokens: 32}
    detection:                # score pruned spans against the testbed's planted spans
      rules: {gradient: instruction_span}
    attention:                # students' attention on the planted distractor
      {enabled: null (auto: on for testbed data), split: test_anti, limit: 100, part: distractor}   # -> attention.json
    quick: {...}              # merged over everything above by --quick
    demo: true                # `leaf demo` runs this bundled config by default

Paths are relative to the config file; ``leaf:REL`` is relative to the installed ``leaf``
package (its bundled configs and testbed assets).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from leaf.errors import LeafError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SPLIT_LABELS = {
    "test_id": "in-distribution",
    "test_anti": "anti-correlated",
    "test_clean": "clean",
}

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "data": {"testbed": None, "train": None, "tests": None, "seed": 0, "bias": 0.95,
             "sizes": None},
    "seeds": [0],
    "teacher": None,
    "student": None,
    "device": "cpu",
    "dtype": "float32",
    "threads": None,
    "screen": {"batch_size": 64, "max_new_tokens": 32},
    "detect": {"levels": ["instruction", "response"], "segments": 2, "batch_size": 16,
               "all": False},
    "prune": {"threshold_mode": "fixed", "tau": 0.10, "quantile": 0.05, "seed": 0},
    "counterfactuals": {
        "instruction_span": {"level": "instruction", "masking": "gradient", "strategy": "span",
                             "verify": True},
    },
    "distill": {"hybrid_lambda": 0.5, "args": {},
                "variants": {"kd": [], "leaf_instr": ["instruction_span"]}},
    "evaluate": {"batch_size": 64, "max_new_tokens": 32},
    "detection": {"rules": {}},
    "attention": {"enabled": None, "split": "test_anti", "limit": 100, "part": "distractor"},
}
_REPLACE = {"counterfactuals", "variants", "rules", "tests", "sizes", "args", "levels", "seeds"}
TOP_KEYS = set(DEFAULTS) | {"quick", "description", "demo"}
SET_KEYS = {"level", "masking", "strategy", "verify", "tau", "threshold_mode", "quantile", "seed"}


def deep_merge(base: dict, over: dict, replace: set[str] = frozenset()) -> dict:
    """``over`` merged into a copy of ``base``; dicts merge key by key except ``replace`` keys."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in replace:
            out[k] = deep_merge(out[k], v, replace)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_path(value: str | None, base: Path, *, is_file: bool = False) -> str | None:
    """A config path made absolute: ``leaf:`` -> package dir; relative -> ``base``.

    ``testbed:FAMILY/ROLE`` names a shipped testbed checkpoint. A value that is neither an
    existing path nor prefixed is returned as given (a hub id such as ``org/model``).
    """
    if value is None:
        return None
    value = str(value)
    if value.startswith("leaf:"):
        return str(PACKAGE_DIR / value[len("leaf:"):])
    if value.startswith("testbed:"):
        from leaf.testbed.assets import resolve_model

        return resolve_model(value)
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = base / p
    if is_file or candidate.exists() or value.startswith("."):
        return str(candidate.resolve())
    return value


def load_config(path: str | Path, *, quick: bool = False, overrides: dict | None = None) -> dict:
    """Read, merge with defaults (and ``quick``), check and resolve one run config."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LeafError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LeafError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise LeafError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise LeafError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    cfg = deep_merge(DEFAULTS, {k: v for k, v in raw.items() if k != "quick"}, _REPLACE)
    if quick and raw.get("quick"):  # like --set: only the keys it names change
        cfg = deep_merge(cfg, raw["quick"])
    if overrides:  # dotted --set values: merge key by key, replace only what is named
        cfg = deep_merge(cfg, overrides)
    cfg["quick"] = bool(quick)
    cfg["config_path"] = str(path.resolve())
    _check_and_resolve(cfg, path)
    return cfg


def _check_and_resolve(cfg: dict, path: Path) -> None:
    base = path.resolve().parent

    def bad(msg: str) -> LeafError:
        return LeafError(f"{path}: {msg}")

    data = cfg["data"]
    family = data.get("testbed")
    if family:
        from leaf.testbed.tasks import FAMILIES

        if family not in FAMILIES:
            raise bad(f"data.testbed: unknown family {family!r}; known: {sorted(FAMILIES)}")
        cfg["teacher"] = cfg["teacher"] or f"testbed:{family}/teacher"
        cfg["student"] = cfg["student"] or f"testbed:{family}/student"
    else:
        if not data.get("train") or not data.get("tests"):
            raise bad("data: give either `testbed: FAMILY` or both `train:` and `tests:`")
        data["train"] = resolve_path(data["train"], base, is_file=True)
        data["tests"] = {k: resolve_path(v, base, is_file=True) for k, v in data["tests"].items()}
    for role in ("teacher", "student"):
        if not cfg[role]:
            raise bad(f"{role}: missing (a model directory or hub id)")
        cfg[role] = resolve_path(cfg[role], base)

    levels = cfg["detect"]["levels"]
    if not set(levels) <= {"instruction", "response"} or not levels:
        raise bad(f"detect.levels: must be a non-empty subset of [instruction, response], got {levels}")
    for name, spec in cfg["counterfactuals"].items():
        unknown = set(spec) - SET_KEYS
        if unknown:
            raise bad(f"counterfactuals.{name}: unknown key(s) {sorted(unknown)}")
        if spec.get("level", "instruction") not in levels:
            raise bad(f"counterfactuals.{name}: level {spec.get('level')!r} is not in detect.levels")
    for variant, sets in cfg["distill"]["variants"].items():
        missing = [s for s in sets or [] if s not in cfg["counterfactuals"]]
        if missing:
            raise bad(f"distill.variants.{variant}: unknown counterfactual set(s) {missing}")
    for rule, cset in cfg["detection"]["rules"].items():
        if cset not in cfg["counterfactuals"]:
            raise bad(f"detection.rules.{rule}: unknown counterfactual set {cset!r}")
        if cfg["counterfactuals"][cset].get("level", "instruction") != "instruction":
            raise bad(f"detection.rules.{rule}: planted spans are in the instruction; "
                      f"set {cset!r} must be instruction level")
    att = cfg["attention"]
    unknown = set(att) - set(DEFAULTS["attention"])
    if unknown:
        raise bad(f"attention: unknown key(s) {sorted(unknown)}; known: "
                  f"{sorted(DEFAULTS['attention'])}")
    if att.get("part") not in ("distractor", "misleading"):
        raise bad(f"attention.part: 'distractor' or 'misleading', got {att.get('part')!r}")
    seeds = cfg["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise bad(f"seeds: a non-empty list of distinct integers, got {seeds}")
