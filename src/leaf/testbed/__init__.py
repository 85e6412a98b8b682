"""The planted-confounder testbed: synthetic tasks, shipped tiny models, detection metrics.

- ``tasks``: task families whose distractor spans are known; splits written as JSONL.
- ``assets``: the shipped teacher/student checkpoints per family and their calibration.
- ``metrics``: span recall / token precision against the planted spans (``mean_ci``, the mean
  and 95% interval over seeds, comes from :mod:`leaf.intervals`).
- ``evaluate``: a small greedy-accuracy check (imports torch; not re-exported here).
- ``tokenizer``: the digit-splitting tokenizer the testbed models share.
"""

from leaf.intervals import mean_ci
from leaf.testbed.assets import (
    ASSETS_DIR,
    calibration,
    families_shipped,
    load,
    model_dir,
    resolve_model,
)
from leaf.testbed.metrics import detection_quality
from leaf.testbed.tasks import (
    FAMILIES,
    SHIFT_SPLITS,
    SPLITS,
    get_family,
    make_split,
    make_splits,
    pretraining_mix,
    write_splits,
)

__all__ = [
    "ASSETS_DIR", "FAMILIES", "SHIFT_SPLITS", "SPLITS", "calibration", "detection_quality", "families_shipped",
    "get_family", "load", "make_split", "make_splits", "mean_ci", "model_dir", "pretraining_mix",
    "resolve_model", "write_splits",
]
