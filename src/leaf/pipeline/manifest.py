"""The run directory's ``manifest.json``: what each stage read, wrote, and when.

One record per stage::

    {"status": "pending" | "running" | "done" | "failed",
     "config_hash": "<sha256 of the stage's parameters and its inputs' digests>",
     "params": {...}, "inputs": {name: path}, "outputs": {name: path},
     "output_digests": {name: sha256}, "attempts": 2,
     "started_at": "2026-...Z", "finished_at": "2026-...Z", "seconds": 12.3, "error": null}

Paths inside the run directory are stored relative to it, so a run directory can be moved.
The manifest is rewritten atomically after every change, so a kill at any moment leaves
either the previous or the next version on disk, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from leaf.data.jsonl import write_json_atomic
from leaf.errors import LeafError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def digest_path(path: str | Path) -> str:
    """sha256 over a file's bytes, or over a directory's relative file names and bytes.

    Trainer checkpoints (``checkpoint-*``) and partial files (``*.part``, ``*.tmp``) inside a
    directory are left out: they are how a stage resumes, not what it produced.
    """
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        _hash_file(h, path)
    elif path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = f.relative_to(path)
            if _is_scratch(rel):
                continue
            h.update(str(rel.as_posix()).encode() + b"\0")
            _hash_file(h, f)
    else:
        h.update(b"<missing>" + str(path).encode())
    return h.hexdigest()


def _is_scratch(rel: Path) -> bool:
    parts = rel.parts
    return (
        any(p.startswith("checkpoint-") for p in parts)
        or rel.name.endswith((".part", ".tmp"))
        or rel.name == ".lock"
    )


def _hash_file(h, path: Path) -> None:
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)


def hash_config(obj: Any) -> str:
    """sha256 of a JSON-serialisable object with sorted keys (a stage's identity)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def portable(obj: Any, root: Path) -> Any:
    """``obj`` with every path inside ``root`` made relative to it (JSON-ready, movable)."""
    if isinstance(obj, dict):
        return {str(k): portable(v, root) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [portable(v, root) for v in obj]
    if isinstance(obj, Path):
        try:
            return obj.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(obj)
    return obj


class Manifest:
    """Read and atomically update ``RUN_DIR/manifest.json``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / MANIFEST
        self.data: dict[str, Any] = {"version": SCHEMA_VERSION, "run": {}, "stages": {}}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise LeafError(f"{self.path}: not valid JSON ({exc.msg}); "
                                "delete it to start the run over") from None
            self.data.setdefault("stages", {})
            self.data.setdefault("run", {})

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def stage(self, name: str) -> dict[str, Any]:
        return self.stages.get(name, {})

    def update_stage(self, name: str, **fields: Any) -> dict[str, Any]:
        rec = self.stages.setdefault(name, {"status": "pending", "attempts": 0})
        rec.update(fields)
        self.save()
        return rec

    def update_run(self, **fields: Any) -> None:
        self.data["run"].update(fields)
        self.save()

    def rel(self, path: str | Path) -> str:
        """``path`` relative to the run directory when inside it, else as given."""
        p = Path(path)
        try:
            return p.resolve().relative_to(self.run_dir.resolve()).as_posix()
        except ValueError:
            return str(path)

    def save(self) -> None:
        write_json_atomic(self.path, self.data)
