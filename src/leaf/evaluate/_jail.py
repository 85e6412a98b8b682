"""Launcher that `leaf.evaluate.sandbox` runs as a separate process (never imported).

Usage: ``python -I -S _jail.py SPOOL_DIR STATUS_FD``. It reads ``SPOOL_DIR/config.json`` and
``SPOOL_DIR/main.py`` and runs the program under limits, then writes one JSON line to STATUS_FD:
``{"returncode": int}``, ``{"signal": int}`` or ``{"error": str}``.

Two modes, chosen by the host (config ``mode``):

* ``namespaces`` (needs root, i.e. CAP_SYS_ADMIN): the launcher unshares mount, PID, network,
  IPC and UTS namespaces and forks an *init* process, PID 1 of the new PID namespace. Init makes
  every mount read-only, mounts private tmpfs on /tmp and /dev/shm, copies the program into
  /tmp/sandbox, and forks the program, which drops to a uid used by nobody else, sets its rlimits
  and execs Python. When the program exits, init exits, and the kernel kills every process left in
  the namespace (daemons, setsid escapees). When the launcher dies, init dies (PDEATHSIG), so a
  SIGKILL of the launcher's process group tears everything down.
* ``process`` (fallback, no privileges needed): the launcher becomes a child subreaper, runs the
  program in a temporary directory under rlimits with a prelude that disables sockets, and on exit
  or SIGTERM kills every descendant it can find in /proc. Weaker: see docs/sandbox.md.

Only the standard library is used: this runs with ``-S`` (no site-packages) for a fast start.
"""

import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import stat
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38

SANDBOX_DIR = "/tmp/sandbox"  # the program's cwd, HOME and TMPDIR (namespaces mode)
WRITABLE = ("/tmp", "/dev/shm")  # private tmpfs mounts; everything else becomes read-only

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None) -> None:
    def enc(s):
        return (None if s is None else s.encode())
    _check(_libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mounts() -> list[tuple[str, set[str]]]:
    rows = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            rows.append((_unescape(parts[4]), set(parts[5].split(","))))
    return rows


def _blocked(path: str) -> tuple[str, str] | None:
    """First ancestor of `path` that others cannot traverse, with the child leading to `path`."""
    cur = "/"
    for comp in [c for c in path.split("/") if c]:
        if not os.stat(cur).st_mode & stat.S_IXOTH:
            return cur, comp
        cur = os.path.join(cur, comp)
    return None


def _expose(paths: list[str]) -> None:
    """Make `paths` reachable by an unprivileged uid without exposing their siblings.

    A directory others cannot enter (e.g. /root holding a pyenv Python) is covered by an empty
    tmpfs into which only the needed child is bind-mounted back.
    """
    for _ in range(16):
        need: dict[str, set[str]] = {}
        for p in paths:
            hit = _blocked(p)
            if hit:
                need.setdefault(hit[0], set()).add(hit[1])
        if not need:
            return
        for parent, children in need.items():
            if parent == "/":
                raise OSError(f"cannot expose {sorted(children)} under /")
            fds = {c: os.open(os.path.join(parent, c), os.O_PATH) for c in children}
            _mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
            for child, fd in fds.items():
                target = os.path.join(parent, child)
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    os.mkdir(target)
                else:
                    open(target, "w").close()
                _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
                os.close(fd)
    raise OSError("could not expose the interpreter")


def _lock_filesystem(cfg: dict) -> None:
    """In the new mount namespace: private tmpfs for /tmp and /dev/shm, the rest read-only."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _expose(cfg["expose"])
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={cfg['tmpfs_mb']}m,nr_inodes=4096,mode=1777")
    if os.path.isdir("/dev/shm"):
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777")
    for target, opts in _mounts():
        if target in WRITABLE:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        flags |= (MS_NODEV if "nodev" in opts else 0) | (MS_NOEXEC if "noexec" in opts else 0)
        try:
            _mount(None, target, None, flags)
        except OSError:
            if target == "/" or not os.path.exists(target):
                raise
            # A mount hidden under another one cannot be reached by path, and is therefore
            # also unreachable from the program; anything else reachable must become read-only.
            if _writable_mount(target):
                raise


def _writable_mount(target: str) -> bool:
    for t, opts in reversed(_mounts()):
        if t == target:
            return "rw" in opts
    return False


def _set_limits(cfg: dict) -> None:
    def both(res: int, value: int) -> None:
        resource.setrlimit(res, (value, value))

    cpu = int(cfg["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
    both(resource.RLIMIT_AS, cfg["memory_mb"] << 20)
    both(resource.RLIMIT_FSIZE, cfg["file_mb"] << 20)
    both(resource.RLIMIT_NOFILE, cfg["max_open_files"])
    both(resource.RLIMIT_CORE, 0)
    if cfg.get("nproc") is not None:
        both(resource.RLIMIT_NPROC, cfg["nproc"])


def _exec_program(cfg: dict, workdir: str, prelude: list[str]) -> None:
    os.chdir(workdir)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir,
           "TMPDIR": os.path.join(workdir, "tmp"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = [cfg["python"], "-I", "-B", *prelude, "main.py", *cfg["args"]]
    os.execve(cfg["python"], argv, env)


def _copy_program(program: bytes, workdir: str, uid: int) -> None:
    os.makedirs(os.path.join(workdir, "tmp"))
    with open(os.path.join(workdir, "main.py"), "wb") as f:
        f.write(program)
    for d in (workdir, os.path.join(workdir, "tmp"), os.path.join(workdir, "main.py")):
        os.chown(d, uid, uid)
    os.chmod(workdir, 0o700)


def _encode_status(status: int) -> dict:
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    return {"returncode": os.WEXITSTATUS(status)}


def _report(fd: int, obj: dict) -> None:
    os.write(fd, (json.dumps(obj) + "\n").encode())


def _init(cfg: dict, program: bytes, status_fd: int) -> int:
    """PID 1 of the new PID namespace. Returns when the program has exited."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        _lock_filesystem(cfg)
        _libc.sethostname(b"sandbox", 7)
        uid = cfg["uid"]
        _copy_program(program, SANDBOX_DIR, uid)
    except Exception as exc:  # reported to the host, which raises SandboxError
        _report(status_fd, {"error": f"sandbox setup failed: {exc}"})
        return 125
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            _set_limits(cfg)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            _exec_program(cfg, SANDBOX_DIR, [])
        finally:
            os._exit(127)
    # Reap everything (orphans are re-parented to us) until the program itself has exited.
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if done == pid:
            _report(status_fd, _encode_status(status))
            break
    return 0  # our exit makes the kernel SIGKILL whatever is left in the namespace


def _run_namespaces(cfg: dict, spool: str, status_fd: int) -> int:
    with open(os.path.join(spool, "main.py"), "rb") as f:
        program = f.read()  # read now: the spool is hidden once /tmp is replaced
    # Python < 3.12 has no os.unshare; use libc.
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS),
           "unshare")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _init(cfg, program, status_fd)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return 0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1


# ----------------------------------------------------------------------------- process mode

_PRELUDE = (
    "import socket as _s\n"
    "def _no_net(*a, **k):\n"
    "    raise PermissionError('network access is disabled in the sandbox')\n"
    "for _n in ('socket', 'create_connection', 'socketpair', 'fromfd', 'getaddrinfo'):\n"
    "    setattr(_s, _n, _no_net)\n"
    "del _s, _n, _no_net\n"
    "import runpy as _r, sys as _y\n"
    "_y.argv = _y.argv[1:]\n"
    "_r.run_path('main.py', run_name='__main__')\n"
)


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents[int(name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    return found


def _user_tasks(uid: int) -> int:
    n = 0
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                n += len(os.listdir(f"/proc/{name}/task"))
        except OSError:
            continue
    return n


def _kill_descendants() -> None:
    """SIGKILL every descendant; as a subreaper we inherit orphans, so repeat until none."""
    me = os.getpid()
    for _ in range(200):
        kids = _descendants(me)
        if not kids:
            return
        for k in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, signal.SIGKILL)
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.01)


def _run_process(cfg: dict, spool: str, status_fd: int) -> int:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    workdir = os.path.join(spool, "work")
    os.makedirs(os.path.join(workdir, "tmp"))
    shutil.copyfile(os.path.join(spool, "main.py"), os.path.join(workdir, "main.py"))
    signal.signal(signal.SIGTERM, lambda *_: (_kill_descendants(), os._exit(1)))
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            _set_limits(cfg)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            _exec_program(cfg, workdir, ["-c", _PRELUDE])
        finally:
            os._exit(127)
    while True:
        done, status = os.waitpid(-1, 0)
        if done == pid:
            _report(status_fd, _encode_status(status))
            break
    _kill_descendants()
    return 0


def main() -> int:
    spool, status_fd = sys.argv[1], int(sys.argv[2])
    os.set_inheritable(status_fd, False)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    with open(os.path.join(spool, "config.json")) as f:
        cfg = json.load(f)
    if os.getppid() != cfg["host_pid"]:  # the host died before PDEATHSIG was armed
        return 1
    if cfg["mode"] == "namespaces":
        cfg["uid"] = cfg["uid_base"] + os.getpid()  # unique among live sandboxes
        cfg["nproc"] = cfg["max_processes"]
        return _run_namespaces(cfg, spool, status_fd)
    # RLIMIT_NPROC counts all tasks of the real uid and does not bind root at all.
    cfg["nproc"] = None if os.getuid() == 0 else _user_tasks(os.getuid()) + cfg["max_processes"]
    return _run_process(cfg, spool, status_fd)


if __name__ == "__main__":
    sys.exit(main())
