"""Run untrusted Python (model-generated code) in a sandbox.

`run_python(source, stdin=..., limits=Limits(...))` runs `source` as ``main.py`` in a separate
process and returns a `SandboxResult`. Everything a model wrote runs through here and nowhere else.

Isolation is chosen once per process (`isolation_mode()`):

* ``"namespaces"`` (root / CAP_SYS_ADMIN): fresh mount, PID, network, IPC and UTS namespaces;
  the whole filesystem read-only except private tmpfs mounts on /tmp and /dev/shm that vanish
  with the run; no network interface but a downed loopback; a uid no other process uses, so
  RLIMIT_NPROC caps the program's process count; the program is a child of a PID-namespace init,
  so when it exits or times out every process it started (daemons, setsid escapees) is killed
  by the kernel.
* ``"userns"`` (not root, where unprivileged user namespaces are allowed): the same namespaces
  inside a new user namespace; the program keeps the caller's uid (without capabilities), whose
  process count RLIMIT_NPROC bounds within that namespace.
* ``"process"`` (fallback when namespaces are unavailable): a separate session and temporary
  directory, the same rlimits, sockets disabled in-process (bypassable), and descendants found
  through /proc (the launcher is a child subreaper) are killed. Filesystem and network isolation
  are NOT guaranteed in this mode; see docs/sandbox.md.

Set ``LEAF_SANDBOX=namespaces`` to refuse the fallback, or ``LEAF_SANDBOX=process`` to force it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from leaf.errors import LeafError

_JAIL = str(Path(__file__).with_name("_jail.py"))
_UID_BASE = 1_500_000_000  # sandbox uid = base + launcher pid: unused by any real account
_KILL_GRACE = 5.0  # seconds to wait for pipes to close after a kill


# runs in flight in this process (several threads may run programs at once), for kill_running
_LIVE: dict[int, tuple[subprocess.Popen, str]] = {}
_LIVE_LOCK = threading.Lock()


def kill_running() -> int:
    """Kill every sandboxed run this process has in flight (on Ctrl-C); their callers then
    return at once with a killed result. Returns how many were killed."""
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for proc, mode in live:
        _kill(proc, mode)
    return len(live)


class SandboxError(LeafError):
    """The sandbox itself could not be set up (not a failure of the program)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one run. Sizes in MiB; times in seconds."""

    timeout: float = 10.0  # wall clock, whole run
    cpu_seconds: float | None = None  # per process; default: the wall timeout + 1
    memory_mb: int = 1024  # address space per process (RLIMIT_AS)
    max_processes: int = 8  # processes + threads of the sandbox uid (RLIMIT_NPROC)
    file_mb: int = 16  # largest file the program may write (RLIMIT_FSIZE)
    tmpfs_mb: int = 64  # total size of its private /tmp (namespaces mode)
    max_output: int = 1 << 20  # bytes kept per stream; more kills the program
    max_open_files: int = 256


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one run. `returncode` is None when the program died by a signal."""

    returncode: int | None
    signal: int | None
    stdout: str
    stderr: str
    timed_out: bool
    output_truncated: bool
    wall_time: float
    mode: str

    @property
    def status(self) -> str:
        """"ok", "timeout", "output_limit", "signal" (e.g. SIGXCPU, SIGXFSZ) or "error"."""
        if self.timed_out:
            return "timeout"
        if self.output_truncated:
            return "output_limit"
        if self.signal is not None:
            return "signal"
        return "ok" if self.returncode == 0 else "error"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_mode_lock = threading.Lock()
_mode: str | None = None
_mode_reason = ""


def isolation_mode() -> str:
    """``"namespaces"``, ``"userns"`` or ``"process"``; probed once (a trivial run) and cached."""
    global _mode, _mode_reason
    with _mode_lock:
        if _mode is None:
            wanted = os.environ.get("LEAF_SANDBOX", "auto")
            if wanted not in ("auto", "namespaces", "process"):
                raise SandboxError(f"LEAF_SANDBOX must be auto, namespaces or process, not {wanted!r}")
            if wanted == "process":
                _mode, _mode_reason = "process", "forced by LEAF_SANDBOX=process"
            else:
                # root: namespaces with a dropped uid; anyone else: an unprivileged user namespace
                candidate = "namespaces" if os.geteuid() == 0 else "userns"
                _mode_reason = _probe(candidate)
                if _mode_reason and wanted == "namespaces":
                    raise SandboxError(f"namespace sandbox unavailable: {_mode_reason}")
                _mode = "process" if _mode_reason else candidate
                if _mode == "process":
                    warnings.warn(
                        f"leaf sandbox: namespaces unavailable ({_mode_reason}); falling back to "
                        "process isolation (no filesystem or network isolation)", stacklevel=2)
        return _mode


def _probe(mode: str) -> str:
    """Empty string when a run in `mode` works here, else why not."""
    try:
        res = _run("import sys; sys.stdout.write('ok')", b"", Limits(timeout=20), None, (), mode)
    except SandboxError as exc:
        return str(exc)
    return "" if res.ok and res.stdout == "ok" else f"probe run failed: {res.stderr[-300:]}"


def run_python(
    source: str,
    *,
    stdin: str | bytes = b"",
    limits: Limits | None = None,
    python: str | None = None,
    args: tuple[str, ...] = (),
    **limit_overrides: float,
) -> SandboxResult:
    """Run `source` as ``main.py`` in the sandbox; keyword overrides patch `limits`.

    `python` is the interpreter (default: this one, with its site-packages). The program sees
    `stdin`, argv ``["main.py", *args]``, and cwd = HOME = a fresh directory, TMPDIR inside it.
    """
    limits = replace(limits or Limits(), **limit_overrides)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return _run(source, data, limits, python, tuple(args), isolation_mode())


def _expose_paths(python: str) -> list[str]:
    real = os.path.realpath(python)
    # the interpreter, its installation, and the environment it belongs to (bin/python -> env)
    paths = {python, real, os.path.dirname(os.path.dirname(real)),
             os.path.dirname(os.path.dirname(os.path.abspath(python)))}
    if python == sys.executable:
        paths |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths |= {os.path.realpath(p) for p in paths}
    return sorted(p for p in paths if p != "/")  # never the whole host filesystem


def _run(source: str, stdin: bytes, limits: Limits, python: str | None,
         args: tuple[str, ...], mode: str) -> SandboxResult:
    python = python or sys.executable
    cpu = limits.cpu_seconds if limits.cpu_seconds is not None else limits.timeout + 1
    cfg = {
        "mode": mode, "python": python, "args": list(args), "expose": _expose_paths(python),
        "host_pid": os.getpid(), "uid_base": _UID_BASE, "cpu_seconds": max(1, math.ceil(cpu)),
        "memory_mb": int(limits.memory_mb), "file_mb": int(limits.file_mb),
        # the program itself lives on that tmpfs too (a harness may embed large test data)
        "tmpfs_mb": int(limits.tmpfs_mb) + math.ceil(len(source.encode()) / 2**20),
        "max_processes": int(limits.max_processes), "max_open_files": int(limits.max_open_files),
    }
    spool = tempfile.mkdtemp(prefix="leaf-sandbox-")
    proc = None
    try:
        Path(spool, "main.py").write_text(source, encoding="utf-8")
        Path(spool, "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        Path(spool, "stdin").write_bytes(stdin)
        status_r, status_w = os.pipe()
        start = time.monotonic()
        try:
            with open(Path(spool, "stdin"), "rb") as fin:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", _JAIL, spool, str(status_w)],
                    stdin=fin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    pass_fds=(status_w,), start_new_session=True, cwd=spool,
                    env={"PATH": "/usr/bin:/bin"},
                )
        finally:
            os.close(status_w)
        with _LIVE_LOCK:
            _LIVE[proc.pid] = (proc, mode)
        with os.fdopen(status_r, "rb") as status_file:
            out, err, status, timed_out, truncated = _collect(proc, status_file, limits, start, mode)
        wall = time.monotonic() - start
    finally:
        if proc is not None:
            _kill(proc, mode)
            proc.wait()
            with _LIVE_LOCK:
                _LIVE.pop(proc.pid, None)
        shutil.rmtree(spool, ignore_errors=True)
    info = json.loads(status.splitlines()[0]) if status.strip() else {}
    if "error" in info:
        raise SandboxError(info["error"])
    if not info and not (timed_out or truncated):
        raise SandboxError(f"sandbox launcher exited ({proc.returncode}) without a status: "
                           f"{err.decode(errors='replace')[-500:]}")
    sig = info.get("signal")
    if timed_out and not info:
        sig = signal.SIGKILL
    return SandboxResult(
        returncode=info.get("returncode"), signal=sig,
        stdout=out.decode("utf-8", errors="replace"), stderr=err.decode("utf-8", errors="replace"),
        timed_out=timed_out, output_truncated=truncated, wall_time=wall, mode=mode,
    )


def _collect(proc: subprocess.Popen, status_file, limits: Limits, start: float, mode: str):
    """Read stdout, stderr and the status pipe until all close; kill on timeout or overflow."""
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray(), status_file: bytearray()}
    sel = selectors.DefaultSelector()
    for f in bufs:
        sel.register(f, selectors.EVENT_READ)
    deadline = start + limits.timeout
    timed_out = truncated = killed = False
    while sel.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if killed:
                break  # pipes still held open after the kill: give up on them
            timed_out = True
            _kill(proc, mode)
            killed, deadline = True, time.monotonic() + _KILL_GRACE
            continue
        for key, _ in sel.select(timeout=remaining):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            buf = bufs[key.fileobj]
            room = limits.max_output - len(buf)
            buf += chunk[:max(room, 0)]
            if len(chunk) > room and key.fileobj is not status_file and not killed:
                truncated = True
                _kill(proc, mode)
                killed, deadline = True, time.monotonic() + _KILL_GRACE
    sel.close()
    for f in (proc.stdout, proc.stderr):
        f.close()
    return (bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]),
            bufs[status_file].decode(errors="replace"), timed_out, truncated)


def _kill(proc: subprocess.Popen, mode: str) -> None:
    """Tear a run down. Namespaces: SIGKILL the launcher's group; init's death kills the rest."""
    if proc.poll() is not None:
        return
    if mode == "process":
        # The launcher is a subreaper and kills every descendant on SIGTERM.
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=_KILL_GRACE)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
