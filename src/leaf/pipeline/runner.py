"""Run a list of stages in a run directory, skipping finished ones and resuming killed ones.

A :class:`Stage` is a unit of work with named inputs, named outputs and parameters. Its
identity (``config_hash``) is the hash of its parameters and of its inputs' contents (for an
input another stage wrote, that stage's recorded output digest), so changing a setting or an
upstream output re-runs exactly the stages that depend on it. A parameter that names an input's
path counts by that input's content, not by the path: the same model at another place (a moved
checkout, a reinstalled package) re-runs nothing.

On each run, per stage:
- ``done`` with the same hash and all outputs present: skipped;
- ``running``/``failed`` with the same hash (a kill or a crash): run again *without* removing
  its outputs, so the stage command resumes from its ``.part`` files or trainer checkpoints;
- anything else (new stage, changed settings or inputs): its old outputs are removed first
  (stage commands treat an existing output as finished work), then it runs.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.errors import LeafError
from leaf.pipeline.manifest import Manifest, digest_path, hash_config, portable, utc_now
from leaf.pipeline.progress import (  # noqa: F401 - estimate_left, format_seconds, stage_kind: re-exported
    LogLines,
    Progress,
    estimate_left,
    format_seconds,
    stage_kind,
)


@dataclass
class Stage:
    """One step of a run: ``fn()`` reads ``inputs`` and must leave every path of ``outputs``."""

    name: str
    fn: Callable[[], Any]
    outputs: dict[str, Path]
    inputs: dict[str, Path | str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def _scratch_siblings(path: Path) -> list[Path]:
    """The output and every ``OUT.*`` beside it (``.part``, ``.tmp``, ``.teacher.part``...)."""
    return [path, *sorted(path.parent.glob(glob.escape(path.name) + ".*"))]


def _remove_outputs(run_dir: Path, outputs: dict[str, Path]) -> None:
    root = run_dir.resolve()
    for out in outputs.values():
        for p in _scratch_siblings(Path(out)):
            if not p.exists() and not p.is_symlink():
                continue
            if root not in p.resolve().parents:
                raise LeafError(f"refusing to delete {p}: stage outputs must lie inside {root}")
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


class RunLock:
    """An exclusive lock on a run directory; released by the OS if the process dies."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.fd = -1

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise LeafError(f"{self.path.parent}: another `leaf run` is using this run "
                            "directory") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def run_stages(
    manifest: Manifest,
    stages: Sequence[Stage],
    *,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> dict[str, str]:
    """Run ``stages`` in order; return ``{stage: "skipped" | "ran"}``. Each stage skipped,
    started, finished or failed is shown by ``progress`` (default: a line through ``log``)."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise LeafError(f"duplicate stage names in plan: {sorted(n for n in names if names.count(n) > 1)}")
    show = progress if progress is not None else LogLines(log)
    produced: dict[str, str] = {}  # resolved output path -> digest, from earlier stages
    outcome: dict[str, str] = {}
    show.begin(names)
    try:
        for i, stage in enumerate(stages, start=1):
            input_digests = {k: _input_digest(v, produced) for k, v in sorted(stage.inputs.items())}
            params = portable(stage.params, manifest.run_dir)
            chash = hash_config({
                "params": _named_inputs(params, stage.inputs),
                "inputs": input_digests,
                "outputs": {k: manifest.rel(v) for k, v in sorted(stage.outputs.items())},
            })
            rec = manifest.stage(stage.name)
            same = rec.get("config_hash") == chash
            if same and rec.get("status") == "done" and all(Path(p).exists()
                                                            for p in stage.outputs.values()):
                show.skipped(i)
                outcome[stage.name] = "skipped"
            else:
                resuming = same and rec.get("status") in ("running", "failed")
                if not resuming:
                    _remove_outputs(manifest.run_dir, stage.outputs)
                show.started(i, resuming)
                t0 = time.monotonic()
                try:
                    _run_one(manifest, stage, params, chash, input_digests, rec)
                except BaseException:
                    show.failed(i, time.monotonic() - t0)
                    raise
                show.finished(i, time.monotonic() - t0)
                outcome[stage.name] = "ran"
            digests = manifest.stage(stage.name).get("output_digests", {})
            for k, p in stage.outputs.items():
                produced[str(Path(p).resolve())] = digests.get(k) or digest_path(p)
    finally:
        show.end()
    return outcome


def _named_inputs(params: Any, inputs: dict[str, Path | str]) -> Any:
    """``params`` with every value that is the local path of one of the stage's ``inputs``
    replaced by ``<input KEY>``: the input's digest already stands for what is there, so the
    same model or file at another path (a moved checkout, a reinstalled package) keeps the
    stage's identity, while other bytes there change it."""
    names: dict[str, str] = {}
    for key, value in inputs.items():
        p = Path(value)
        if p.exists():
            names[str(value)] = names[str(p.resolve())] = f"<input {key}>"

    def swap(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: swap(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [swap(v) for v in obj]
        return names.get(obj, obj) if isinstance(obj, str) else obj

    return swap(params) if names else params


def _input_digest(value: Path | str, produced: dict[str, str]) -> str:
    p = Path(value)
    key = str(p.resolve()) if p.exists() else None
    if key and key in produced:
        return produced[key]
    if p.exists():
        return digest_path(p)
    return f"id:{value}"  # a hub id or a name, not a local path


def _run_one(
    manifest: Manifest, stage: Stage, params: Any, chash: str, input_digests: dict[str, str],
    rec: dict,
) -> None:
    attempts = int(rec.get("attempts", 0)) + 1
    prior = float(rec.get("seconds_total", 0.0)) if rec.get("config_hash") == chash else 0.0
    manifest.update_stage(
        stage.name,
        status="running",
        config_hash=chash,
        params=params,
        inputs={k: manifest.rel(v) for k, v in stage.inputs.items()},
        input_digests=input_digests,
        outputs={k: manifest.rel(v) for k, v in stage.outputs.items()},
        output_digests={},
        attempts=attempts,
        started_at=utc_now(),
        finished_at=None,
        error=None,
    )
    t0 = time.monotonic()
    try:
        stage.fn()
        missing = [manifest.rel(p) for p in stage.outputs.values() if not Path(p).exists()]
        if missing:
            raise LeafError(f"stage {stage.name} finished without writing {', '.join(missing)}")
    except BaseException as exc:
        spent = time.monotonic() - t0
        manifest.update_stage(
            stage.name, status="failed", error=f"{type(exc).__name__}: {exc}",
            seconds=round(spent, 3), seconds_total=round(prior + spent, 3),
        )
        raise
    spent = time.monotonic() - t0
    manifest.update_stage(
        stage.name,
        status="done",
        finished_at=utc_now(),
        seconds=round(spent, 3),
        seconds_total=round(prior + spent, 3),
        output_digests={k: digest_path(p) for k, p in stage.outputs.items()},
    )
