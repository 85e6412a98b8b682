"""Model names with a scheme (``testbed:FAMILY/ROLE``): one registry in ``leaf.models`` that the
command line, ``leaf run`` and ``leaf.stages`` all resolve through."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from leaf import models
from leaf.models import model_schemes, register_model_scheme, resolve_model_name
from leaf.testbed.assets import model_dir

TEACHER = str(model_dir("digit_sum", "teacher"))


@pytest.fixture
def scratch_scheme():
    """Register schemes for one test and forget them afterwards."""
    before = dict(models._RESOLVERS)
    yield
    models._RESOLVERS.clear()
    models._RESOLVERS.update(before)


def test_testbed_names_resolve_and_other_names_pass_unchanged():
    assert "testbed" in model_schemes()
    assert resolve_model_name("testbed:digit_sum/teacher") == TEACHER
    for name in ("org/model", "./local/dir", "/abs/dir", "unregistered:x/y", "C:/models/m"):
        assert resolve_model_name(name) == name
    assert resolve_model_name(Path("some/dir")) == "some/dir"


def test_a_bad_testbed_name_is_one_clear_error():
    from leaf.errors import LeafError

    with pytest.raises(LeafError, match="no shipped teacher checkpoint for testbed family 'nosuch'"):
        resolve_model_name("testbed:nosuch/teacher")


def test_schemes_register_a_function_or_a_module_function_named_lazily(scratch_scheme):
    register_model_scheme("shelf", lambda rest: f"/models/{rest}")
    register_model_scheme("bundled", "leaf.testbed.assets:shipped_model")
    assert resolve_model_name("shelf:qwen/0.5b") == "/models/qwen/0.5b"
    assert resolve_model_name("bundled:digit_sum/teacher") == TEACHER
    with pytest.raises(ValueError, match="model scheme"):
        register_model_scheme("Not A Scheme", str)


def test_every_entry_point_knows_the_testbed_without_importing_it_first(tmp_path):
    """A fresh interpreter: the stages load no testbed module, yet a testbed: name resolves in
    the stages (Python API), the run config (``leaf run``) and the command-line flags."""
    code = (
        "import sys\n"
        "import leaf.stages\n"
        "assert not [m for m in sys.modules if m.startswith('leaf.testbed')]\n"
        "args = leaf.stages.distill_arguments({'teacher_model': 'testbed:digit_sum/teacher',\n"
        f"                                      'output_dir': {str(tmp_path)!r}}})\n"
        "print(args.teacher_model)\n"
        "from pathlib import Path\n"
        "from leaf.pipeline.config import resolve_path\n"
        "print(resolve_path('testbed:digit_sum/teacher', Path('.')))\n"
        "from leaf.commands._options import model_ref\n"
        "print(model_ref('testbed:digit_sum/teacher'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [TEACHER] * 3
