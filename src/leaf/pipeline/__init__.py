"""``leaf run``: the whole LeaF pipeline from one config, resumable stage by stage.

:func:`run_pipeline` loads a config (:mod:`leaf.pipeline.config`), builds the stage list
(:mod:`leaf.pipeline.plan`) and runs it in a run directory whose ``manifest.json``
(:mod:`leaf.pipeline.manifest`) records every stage; finished stages are skipped and killed
ones resume (:mod:`leaf.pipeline.runner`). ``results.json`` and the tables come from
:mod:`leaf.pipeline.results` and :mod:`leaf.pipeline.tables`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from leaf import __version__
from leaf.pipeline.config import RunConfig, load_config
from leaf.pipeline.manifest import Manifest, utc_now
from leaf.pipeline.progress import LiveLine, LogLines, file_log, tee
from leaf.pipeline.runner import RunLock, run_stages


def run_pipeline(
    config: str | Path | RunConfig,
    run_dir: str | Path,
    *,
    quick: bool = False,
    log: Callable[[str], None] = print,
    quiet: bool = False,
    live: TextIO | None = None,
) -> dict:
    """Run (or resume) every stage of ``config`` in ``run_dir``; return ``results.json``.

    ``quiet``: the stages' own output (progress bars, summaries) goes to ``RUN_DIR/stages.log``
    instead of the terminal, with the lines ``log`` gets (one as each stage starts, one as it
    ends). ``live``: a terminal to show one progress line on, rewritten in place, instead of
    calling ``log`` (the lines then go to ``stages.log`` only).
    """
    from leaf.pipeline.plan import build_stages  # heavy: numpy

    cfg = config if isinstance(config, RunConfig) else load_config(config, quick=quick)
    if cfg.runtime.threads:
        import torch  # heavy: torch

        torch.set_num_threads(cfg.runtime.threads)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    with RunLock(run):
        manifest = Manifest(run)
        snapshot = run / "config.json"
        tmp = snapshot.with_name(snapshot.name + ".tmp")
        tmp.write_text(json.dumps(cfg.as_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(snapshot)
        manifest.update_run(name=cfg.name, config=cfg.config_path, quick=cfg.is_quick,
                            started_at=utc_now(), finished_at=None, status="running",
                            leaf_version=__version__, leaf_commit=_source_commit())
        t0 = time.monotonic()
        try:
            stages = build_stages(cfg, run)
            lines = log
            if quiet or live is not None:
                for st in stages:
                    st.fn = _logged(st.fn, st.name, run / "stages.log")
                lines = file_log(run / "stages.log") if live is not None else \
                    tee(log, file_log(run / "stages.log"))
            show = LiveLine(live, lines) if live is not None else LogLines(lines)
            outcome = run_stages(manifest, stages, progress=show)
        except BaseException:
            manifest.update_run(status="failed")
            raise
        manifest.data["files"] = report_files(cfg, run)
        manifest.update_run(status="done", finished_at=utc_now(),
                            seconds=round(time.monotonic() - t0, 1),
                            ran=sorted(k for k, v in outcome.items() if v == "ran"))
    return json.loads((run / "results.json").read_text(encoding="utf-8"))


class LineLog:
    """A text stream onto a log file that keeps what a terminal would have shown: a progress
    bar redrawing itself after carriage returns leaves one line, its last state, instead of
    every redraw on one long line."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.line = ""  # the text since the last carriage return or newline
        self.shown: str | None = None  # the last non-blank state of the current line

    def _emit(self, text: str) -> None:
        self.fh.write(text.rstrip() + "\n")

    def write(self, text: str) -> int:
        for piece in text.replace("\r\n", "\n").splitlines(keepends=True):
            body = piece.rstrip("\r\n")
            self.line += body
            if piece.endswith("\n"):
                if self.line.strip():
                    self._emit(self.line)
                elif self.shown:
                    self._emit(self.shown)
                self.line, self.shown = "", None
            elif piece.endswith("\r"):
                if self.line.strip():
                    self.shown = self.line
                elif self.line and self.shown:  # a bar wiping itself: keep its last state
                    self._emit(self.shown)
                    self.shown = None
                self.line = ""
        return len(text)

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        """Write the unfinished line (a bar's last state), then flush."""
        if self.line.strip():
            self._emit(self.line)
        elif self.shown:
            self._emit(self.shown)
        self.line, self.shown = "", None
        self.flush()

    def isatty(self) -> bool:
        return False


def _logged(fn: Callable[[], object], name: str, path: Path) -> Callable[[], object]:
    """``fn`` with stdout and stderr appended to ``path`` (progress bars as their last state)."""
    import contextlib

    def call() -> object:
        with path.open("a", encoding="utf-8") as fh:
            log = LineLog(fh)
            try:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    print(f"== {utc_now()} {name}", flush=True)
                    return fn()
            finally:
                log.close()

    return call


def report_files(cfg: RunConfig, run: Path) -> dict:
    """What ``leaf report RUN_DIR`` shows: the first replicate's scores, its span/gradient
    counterfactual sets (the ones LeaF trains on), its screened samples and, with testbed
    data, the students' attention on the planted distractor (``attention.json``)."""
    dkey = next(iter(cfg.replicates().values()))
    sets = [n for n, spec in cfg.counterfactuals.items()
            if spec.masking == "gradient" and spec.strategy == "span"]
    files = {
        "scores": [f"{dkey}/detect/{lv}.jsonl" for lv in cfg.detect.levels],
        "counterfactuals": [f"{dkey}/prune/{n}.jsonl" for n in sets],
        "screened": [f"{dkey}/screen/screened.jsonl"],
        "attention": ["attention.json"],
    }
    return {k: [p for p in v if (run / p).is_file()] for k, v in files.items()}


def _source_commit() -> str | None:
    """The git commit of the leaf source tree, when it is a checkout (else None)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
