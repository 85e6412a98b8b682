"""Launcher that `leaf.evaluate.sandbox` runs as a separate process (never imported).

Usage: ``python -I -S _jail.py SPOOL_DIR STATUS_FD``. It reads ``SPOOL_DIR/config.json`` and
``SPOOL_DIR/main.py`` and runs the program under limits, then writes one JSON line to STATUS_FD:
``{"returncode": int}``, ``{"signal": int}`` or ``{"error": str}``.

Two modes, chosen by the host (config ``mode``):

* ``namespaces`` (needs root, i.e. CAP_SYS_ADMIN): the launcher unshares mount, PID, network,
  IPC and UTS namespaces and forks an *init* process, PID 1 of the new PID namespace. Init builds
  a new root holding only the system directories (/usr, /lib..., /etc) and the interpreter, all
  read-only, plus /dev/null & co, a fresh /proc and private tmpfs mounts on /tmp and /dev/shm;
  it enters that root, copies the program into /tmp/sandbox and forks the program, which drops
  to a uid used by nobody else, sets its rlimits and execs Python. When the program exits, init
  exits, and the kernel kills every process left in the namespace (daemons, setsid escapees).
  When the launcher dies, init dies (PDEATHSIG), so a SIGKILL of the launcher's process group
  tears everything down.
* ``userns`` (not root, unprivileged user namespaces allowed): the same, inside a new user
  namespace that maps only the caller's own uid; the program keeps that uid (no capabilities
  after exec) and RLIMIT_NPROC counts its processes within the new namespace only.
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
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME = 32, 1024, 2048
MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 4096, 8192, 16384, 1 << 18, \
    1 << 21, 1 << 24
# Per-mount options a remount must keep (in a user namespace the host's are locked).
_KEEP = {"nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
         "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38

SANDBOX_DIR = "/tmp/sandbox"  # the program's cwd, HOME and TMPDIR (namespaces mode)
WRITABLE = ("/tmp", "/dev/shm")  # private tmpfs mounts; everything else becomes read-only
# What the new root holds besides the interpreter (bound read-only from the host).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")

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
    """(mount point, per-mount options) for each mount visible from our root, in mount order."""
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


def _minimal(paths: list[str]) -> list[str]:
    """Drop paths that lie inside another path of the list."""
    paths = sorted(set(paths))
    return [p for p in paths if not any(p.startswith(q.rstrip("/") + "/") for q in paths)]


def _bind(fd: int, target: str) -> None:
    """Bind-mount the file or directory open as `fd` at `target`, creating the mount point."""
    is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
    os.makedirs(target if is_dir else os.path.dirname(target), mode=0o755, exist_ok=True)
    if not is_dir and not os.path.exists(target):
        open(target, "w").close()
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)


def _build_root(cfg: dict) -> None:
    """Switch to a new root holding only the system directories, the interpreter, /dev basics,
    a fresh /proc and a private /tmp; then make every mount but /tmp and /dev/shm read-only.

    The host's other files (home directories, /work, /run with its sockets, /var) are not in
    the new root at all, so the program can neither read nor reach them.
    """
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do propagates to the host
    links = [p for p in SYSTEM_DIRS if os.path.islink(p)]
    wanted = [p for p in SYSTEM_DIRS if os.path.isdir(p) and p not in links]
    wanted += [p for p in cfg["expose"] if p != "/" and os.path.exists(p)]
    fds = [(p, os.open(p, os.O_PATH)) for p in _minimal(wanted)]  # before anything is covered
    new = "/tmp"  # any directory works as the mount point of the new root
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    os.mkdir(new + "/dev", 0o755)
    _mount("tmpfs", new + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for name in ("null", "zero", "full", "random", "urandom"):
        fd = os.open(f"/dev/{name}", os.O_PATH)
        _bind(fd, f"{new}/dev/{name}")
        os.close(fd)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{new}/dev/{name}")
    for path, options in (("/dev/shm", "size=16m,mode=1777"),
                          ("/tmp", f"size={cfg['tmpfs_mb']}m,nr_inodes=4096,mode=1777")):
        os.mkdir(new + path)
        _mount("tmpfs", new + path, "tmpfs", MS_NOSUID | MS_NODEV, options)
    os.mkdir(new + "/proc")
    _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path, fd in fds:  # after /tmp: an interpreter living under /tmp goes on top of it
        _bind(fd, new + path)
        os.close(fd)
    for path in links:  # merged-/usr systems: /bin -> usr/bin and so on
        os.symlink(os.readlink(path), new + path)
    os.chdir(new)
    _mount(new, "/", None, MS_MOVE)  # cover the old root ...
    os.chroot(".")  # ... and enter the new one (an unprivileged program cannot chroot out)
    os.chdir("/")
    for target, opts in _mounts():
        if target in WRITABLE:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        for name, flag in _KEEP.items():
            flags |= flag if name in opts else 0
        _mount(None, target, None, flags)


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
        _build_root(cfg)
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
            if cfg["mode"] == "namespaces":  # root: drop to the unused uid
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            # (userns: we already are the unprivileged user; exec drops the namespace's caps)
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
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if cfg["mode"] == "userns":
        uid, gid = os.getuid(), os.getgid()
        _check(_libc.unshare(flags | CLONE_NEWUSER), "unshare")
        # map only ourselves: inside, we keep our uid, with capabilities until we exec
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    else:
        _check(_libc.unshare(flags), "unshare")
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
    uid = None
    if os.getuid() == 0 and not any(_blocked(p) for p in cfg["expose"]):
        # Root without namespaces: still drop to an unused uid when the interpreter is
        # reachable by others, so file permissions and RLIMIT_NPROC apply.
        uid = cfg["uid_base"] + os.getpid()
        cfg["nproc"] = cfg["max_processes"]
        os.chmod(spool, 0o711)
        for d in (workdir, os.path.join(workdir, "tmp"), os.path.join(workdir, "main.py")):
            os.chown(d, uid, uid)
    signal.signal(signal.SIGTERM, lambda *_: (_kill_descendants(), os._exit(1)))
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            _set_limits(cfg)
            if uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
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
    if cfg["mode"] in ("namespaces", "userns"):
        # root: a uid unique among live sandboxes; userns: our own uid, whose process count
        # starts from zero inside the new user namespace
        uid = cfg["uid_base"] + os.getpid() if cfg["mode"] == "namespaces" else os.getuid()
        # (in a user namespace the launcher and init count too, hence + 2)
        cfg["uid"] = uid
        cfg["nproc"] = cfg["max_processes"] + (2 if cfg["mode"] == "userns" else 0)
        return _run_namespaces(cfg, spool, status_fd)
    # RLIMIT_NPROC counts all tasks of the real uid and does not bind root at all.
    cfg["nproc"] = None if os.getuid() == 0 else _user_tasks(os.getuid()) + cfg["max_processes"]
    return _run_process(cfg, spool, status_fd)


if __name__ == "__main__":
    sys.exit(main())
