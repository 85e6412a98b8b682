"""leaf's stages as Python functions: the same work as ``leaf screen``, ``leaf detect``, ...

Stage 1 (:mod:`leaf.stages.confounders`): :func:`screen` -> :func:`detect` -> :func:`prune`
(with ``verify``). Stage 2 (:mod:`leaf.stages.distillation`): :func:`teacher_cache`
(optional), :func:`distill_arguments` -> :func:`distill`. Then :func:`evaluate` or
:func:`grade` (:mod:`leaf.stages.evaluation`). :func:`make_student` (:mod:`leaf.stages.student`)
makes a student from a teacher.

Every function takes input and output paths (``data`` and ``bench`` may also be lists of
sample dicts, checked like files, errors naming the row index; or any table
:mod:`leaf.data.readers` reads, with a column mapping) and a typed options object
(:mod:`leaf.stages.options`), checked when it is made, so a bad value fails before any model
loads. Outputs are written through ``OUT.part`` and renamed when complete; calling a function
again after an interruption resumes. Functions print nothing but progress bars; the stage-1
functions return a summary whose ``str()`` is the line the command prints. torch and
transformers are imported only when a function runs. Started by ``torchrun``, screen,
detect, prune, teacher_cache and evaluate run data-parallel (:mod:`leaf.distributed`): the
same call on every rank, one merged output, the bytes one process writes.
"""

from leaf.stages.confounders import (
    DetectSummary,
    PruneSummary,
    ScreenSummary,
    detect,
    prune,
    read_signal,
    screen,
    select_samples,
    signal_file,
)
from leaf.stages.distillation import distill, distill_arguments, teacher_cache
from leaf.stages.evaluation import evaluate, grade
from leaf.stages.options import (
    DetectOptions,
    EvalOptions,
    GenerationOptions,
    GradingOptions,
    PruneOptions,
    StudentOptions,
    TeacherCacheOptions,
    VerifyOptions,
)
from leaf.stages.student import StudentSummary, make_student

__all__ = [
    "DetectOptions", "DetectSummary", "EvalOptions", "GenerationOptions", "GradingOptions",
    "PruneOptions", "PruneSummary", "ScreenSummary", "StudentOptions", "StudentSummary",
    "TeacherCacheOptions", "VerifyOptions", "detect", "distill", "distill_arguments", "evaluate",
    "grade", "make_student", "prune", "read_signal", "screen", "select_samples", "signal_file",
    "teacher_cache",
]
