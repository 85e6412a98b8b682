"""Run a stage function data-parallel from ``leaf run``: ``torchrun`` over ``parallel.processes``.

``leaf run`` itself stays one process (it holds the run lock and writes the manifest). For a
stage that ``parallel.stages`` names, it writes the call (function name, arguments, typed
options as plain data) to a small JSON file and starts
``python -m torch.distributed.run --nproc_per_node N [parallel.launcher_args] -m
leaf.pipeline.launch CALL.json``; every rank rebuilds the options, checks them again and calls
the same :mod:`leaf.stages` function, which shards the work (:mod:`leaf.data.rowjob`).
The output is the same bytes a single process writes, so the stage's hash and its downstream
stages do not depend on ``parallel``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leaf import distributed, stages
from leaf.errors import LeafError
from leaf.settings import from_mapping, to_mapping

OPTION_TYPES = ("DetectOptions", "EvalOptions", "GenerationOptions", "PruneOptions",
                "TeacherCacheOptions", "VerifyOptions")


def _encode(value: Any) -> Any:

    if type(value).__name__ in OPTION_TYPES:
        return {"__options__": type(value).__name__, "value": to_mapping(value)}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _decode(value: Any) -> Any:

    if isinstance(value, dict) and "__options__" in value:
        name = value["__options__"]
        if name not in OPTION_TYPES:
            raise LeafError(f"unknown options type {name!r}")
        return from_mapping(getattr(stages, name), value["value"], name)
    return value


def stage_call(parallel, kind: str, fn: Callable[..., Any], *args: Any,
               threads: int | None = None, **kwargs: Any) -> Callable[[], Any]:
    """A zero-argument callable running ``fn(*args, **kwargs)``: in this process, or under
    ``torchrun`` when ``parallel.processes > 1`` and ``kind`` is in ``parallel.stages``."""
    if parallel.processes <= 1 or kind not in parallel.stages:
        return lambda: fn(*args, **kwargs)
    return lambda: launch(fn.__name__, list(args), kwargs, parallel.processes,
                          list(parallel.launcher_args), threads)


def launch(fn_name: str, args: list, kwargs: dict, processes: int,
           launcher_args: list[str], threads: int | None = None) -> None:
    """Run ``leaf.stages.<fn_name>(*args, **kwargs)`` on ``processes`` ranks and wait."""
    spec = {"fn": fn_name, "args": [_encode(a) for a in args],
            "kwargs": {k: _encode(v) for k, v in kwargs.items()}, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="leaf-launch-") as tmp:
        path = Path(tmp) / "call.json"
        path.write_text(json.dumps(spec), encoding="utf-8")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
               str(processes), *launcher_args, "-m", "leaf.pipeline.launch", str(path)]
        streams = {}
        for name in ("stdout", "stderr"):  # follow a redirection (leaf run's quiet mode)
            stream = getattr(sys, name)
            try:
                stream.flush()
                streams[name] = stream.fileno()
            except (AttributeError, OSError, ValueError):
                streams[name] = None
        rc = subprocess.run(cmd, **streams).returncode
    if rc != 0:
        raise LeafError(f"{fn_name} on {processes} processes (torchrun) exited with status "
                        f"{rc}; the ranks' messages are above. Run again to resume")


def main(argv: list[str] | None = None) -> int:
    """One rank: ``python -m leaf.pipeline.launch CALL.json``."""

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    rank = os.environ.get("RANK", "0")
    try:
        distributed.init()
        if spec.get("threads"):
            import torch  # heavy: torch

            torch.set_num_threads(int(spec["threads"]))
        fn = getattr(stages, spec["fn"])
        fn(*[_decode(a) for a in spec["args"]],
           **{k: _decode(v) for k, v in spec["kwargs"].items()})
    except LeafError as exc:
        print(f"leaf {spec['fn']} (rank {rank}): error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
