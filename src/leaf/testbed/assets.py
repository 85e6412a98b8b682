"""Where the shipped testbed checkpoints live, and how to load them.

Layout (regenerate with ``scripts/train_testbed.py``)::

    src/leaf/testbed/assets/<family>/teacher/   # safetensors + tokenizer files
    src/leaf/testbed/assets/<family>/student/
    src/leaf/testbed/assets/<family>/<extra role>/  # e.g. word_problem/teacher_varied
    src/leaf/testbed/assets/<family>/calibration.json
"""

from __future__ import annotations

import json
from pathlib import Path

from leaf.errors import LeafError

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
ROLES = ("teacher", "student")
TESTBED_PREFIX = "testbed:"


def families_shipped() -> list[str]:
    """Families with both checkpoints present."""
    if not ASSETS_DIR.is_dir():
        return []
    return sorted(p.name for p in ASSETS_DIR.iterdir()
                  if all((p / r / "config.json").is_file() for r in ROLES))


def extra_roles(family: str) -> list[str]:
    """Checkpoints a family ships beside its teacher and student (the second study's dose
    students and shift teacher, ``scripts/train_testbed.py``'s ``EXTRA_ROLES``)."""
    root = ASSETS_DIR / family
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.name not in ROLES and (p / "config.json").is_file())


def model_dir(family: str, role: str) -> Path:
    """Directory of the shipped ``role`` checkpoint of ``family``: "teacher", "student" or
    one of :func:`extra_roles`."""
    if role not in ROLES and role not in extra_roles(family):
        raise ValueError(f"role must be one of {ROLES + tuple(extra_roles(family))}, got {role!r}")
    path = ASSETS_DIR / family / role
    if not (path / "config.json").is_file():
        raise LeafError(
            f"no shipped {role} checkpoint for testbed family {family!r} at {path}; "
            f"shipped: {families_shipped() or 'none'} (regenerate with scripts/train_testbed.py)"
        )
    return path


def shipped_model(name: str) -> str:
    """``"<family>/<role>"`` -> the shipped checkpoint's directory: the resolver of the
    ``testbed:`` model-name scheme (registered in ``leaf/__init__.py``, see :mod:`leaf.models`).

    Lets a run config or a flag name the shipped models without knowing where the package is
    installed.
    """
    family, _, role = name.partition("/")
    return str(model_dir(family, role))


def resolve_model(ref: str | Path) -> str:
    """``"testbed:<family>/<role>"`` -> the shipped checkpoint's directory; anything else as is."""
    ref = str(ref)
    if not ref.startswith(TESTBED_PREFIX):
        return ref
    return shipped_model(ref[len(TESTBED_PREFIX):])


def calibration(family: str) -> dict:
    """The ``calibration.json`` written when the family's checkpoints were trained."""
    path = ASSETS_DIR / family / "calibration.json"
    if not path.is_file():
        raise LeafError(f"no calibration.json for testbed family {family!r} at {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def load(family: str, role: str, dtype: str = "float32"):
    """``(model, tokenizer)`` of a shipped checkpoint, in eval mode."""
    import torch  # heavy: torch and transformers load only when a checkpoint is loaded
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: transformers

    path = model_dir(family, role)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return model.eval(), AutoTokenizer.from_pretrained(path)
