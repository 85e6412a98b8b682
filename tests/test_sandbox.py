"""The sandbox. Hostile programs run through the code grader: each must be contained and reported as failed,
the grader must keep working afterwards, and the host must be left as it was.

Limits are kept small (few processes, little memory, short timeouts) so that a containment bug
cannot take the machine down. Never run these programs outside the sandbox.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time
from pathlib import Path
from shutil import which as shutil_which

import pytest

from leaf.evaluate import sandbox
from leaf.evaluate.code import run_tests
from leaf.evaluate.sandbox import Limits, isolation_mode

SAMPLE = {
    "id": "toy/add",
    "prompt": "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
    "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}
GOOD = "    return a + b\n"
SMALL = Limits(timeout=3.0, memory_mb=512, max_processes=24, file_mb=4)

BEST_MODE = isolation_mode()  # "namespaces" as root, "userns" for others where allowed
NAMESPACES = BEST_MODE in ("namespaces", "userns")
needs_namespaces = pytest.mark.skipif(
    not NAMESPACES, reason="filesystem, network and process-count isolation need namespaces"
)


def _marked(token: str, body: str) -> str:
    """Prefix a hostile program with a process-name marker (inherited by its forks)."""
    return f"import ctypes\nctypes.CDLL(None).prctl(15, b{token!r}, 0, 0, 0)\n{body}"


def _leftovers(token: str) -> list[int]:
    """Host processes carrying `token` in their name or command line."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            comm = Path(f"/proc/{name}/comm").read_text().strip()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if comm == token or token in cmdline:
            found.append(int(name))
    return found


def _assert_contained(result, token: str) -> None:
    assert not result.passed, result
    deadline = time.monotonic() + 3
    while _leftovers(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _leftovers(token) == [], "sandboxed processes outlived the run"
    # the grader keeps working
    assert run_tests(GOOD, SAMPLE, limits=SMALL).passed


@pytest.fixture
def token() -> str:
    return "lf" + secrets.token_hex(6)  # fits the 15-character process name


@pytest.fixture(params=["isolated", "process"])
def mode(request, monkeypatch):
    """Run a test in the best mode available and in the weaker fallback mode."""
    if request.param == "isolated" and not NAMESPACES:
        pytest.skip("namespaces unavailable here")
    chosen = BEST_MODE if request.param == "isolated" else "process"
    monkeypatch.setattr(sandbox, "_mode", chosen)
    return chosen


def test_infinite_loop_times_out(mode, token):
    res = run_tests(_marked(token, "while True:\n    pass\n"), SAMPLE, timeout=1.0, limits=SMALL)
    assert res.status == "timeout"
    _assert_contained(res, token)


def test_cpu_spin_in_several_processes_is_killed(mode, token):
    body = "import os\nfor _ in range(3):\n    os.fork()\nwhile True:\n    pass\n"
    res = run_tests(_marked(token, body), SAMPLE, timeout=1.0, limits=SMALL)
    assert res.status == "timeout"
    _assert_contained(res, token)


def test_cpu_time_limit(token):
    limits = Limits(timeout=20, cpu_seconds=1, memory_mb=512, max_processes=8)
    res = run_tests(_marked(token, "while True:\n    pass\n"), SAMPLE, timeout=20, limits=limits)
    assert res.status == "error" and "signal" in res.detail  # SIGXCPU, well before 20 s
    _assert_contained(res, token)


def test_sigterm_ignoring_process_dies(mode, token):
    body = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "while True:\n    time.sleep(0.1)\n")
    res = run_tests(_marked(token, body), SAMPLE, timeout=1.0, limits=SMALL)
    assert res.status == "timeout"
    _assert_contained(res, token)


def test_setsid_double_fork_daemon_does_not_outlive_the_run(mode, token):
    body = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/bin/sleep', ['sleep', '{int(token[2:], 16) % 10**9 + 10**9}'])\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
    )
    res = run_tests(_marked(token, body), SAMPLE, limits=SMALL)
    assert res.status == "failed"  # `add` is the bare prompt: it returns None
    sleep_arg = str(int(token[2:], 16) % 10**9 + 10**9)
    assert _leftovers(sleep_arg) == []
    _assert_contained(res, token)


def test_os_exit_zero_before_the_tests_is_a_failure(mode, token):
    res = run_tests(_marked(token, "import os\nos._exit(0)\n"), SAMPLE, limits=SMALL)
    assert res.status == "error" and "before the tests finished" in res.detail
    _assert_contained(res, token)


def test_memory_bomb(mode, token):
    body = "blocks = []\nwhile True:\n    blocks.append(bytearray(32 << 20))\n"
    res = run_tests(_marked(token, body), SAMPLE, limits=Limits(timeout=10, memory_mb=256))
    assert res.status == "error" and "MemoryError" in res.detail
    _assert_contained(res, token)


def test_socket_to_a_listening_host_port_gets_nothing(mode, token):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(5)
        server.setblocking(False)
        port = server.getsockname()[1]
        body = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                "s.sendall(b'leak')\n")
        res = run_tests(_marked(token, body), SAMPLE, limits=SMALL)
        with pytest.raises(BlockingIOError):
            server.accept()  # no connection ever arrived
    assert res.status == "error"
    assert "Network is unreachable" in res.detail or "network access is disabled" in res.detail
    _assert_contained(res, token)


@needs_namespaces
def test_fork_bomb_is_capped(token):
    body = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    res = run_tests(_marked(token, body), SAMPLE, timeout=2, limits=SMALL)
    assert res.status == "timeout"
    assert time.monotonic() - start < 15
    _assert_contained(res, token)


@needs_namespaces
def test_fork_count_is_limited(token):
    body = (
        "import os, sys, time\nn = 0\n"
        "try:\n    for _ in range(100):\n"
        "        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n"
        "        n += 1\nexcept OSError:\n    pass\n"
        "print('forked', n)\nsys.exit(1)\n"
    )
    res = sandbox.run_python(_marked(token, body), limits=Limits(timeout=5, max_processes=10))
    assert res.stdout.strip() == "forked 9"  # the program itself is the tenth process
    assert _leftovers(token) == []


@pytest.fixture
def probe_dirs(tmp_path):
    """World-writable directories holding a world-writable probe file, in /tmp and /var/tmp:
    permissions allow anyone to change them, so only the sandbox can keep them intact."""
    dirs = [tmp_path]
    if os.access("/var/tmp", os.W_OK):
        dirs.append(Path(tempfile.mkdtemp(prefix="leaf-probe-", dir="/var/tmp")))
    for d in dirs:
        d.chmod(0o777)
        (d / "probe.txt").write_text("intact")
        (d / "probe.txt").chmod(0o666)
    yield dirs
    for d in dirs[1:]:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


@needs_namespaces
def test_writing_and_deleting_outside_its_directory(token, probe_dirs):
    targets = [str(d) for d in probe_dirs]
    body = (
        "import os, shutil\n"
        f"for d in {targets!r} + ['/tmp', '/var/tmp', os.path.expanduser('~root')]:\n"
        "    for action in ('new', 'append', 'delete', 'rmtree'):\n"
        "        try:\n"
        "            if action == 'new':\n"
        f"                open(os.path.join(d, '{token}.txt'), 'w').write('pwned')\n"
        "            elif action == 'append':\n"
        "                open(os.path.join(d, 'probe.txt'), 'a').write('pwned')\n"
        "            elif action == 'delete':\n"
        "                os.remove(os.path.join(d, 'probe.txt'))\n"
        "            else:\n"
        "                shutil.rmtree(d)\n"
        "        except OSError:\n"
        "            pass\n"
    )
    res = run_tests(_marked(token, body), SAMPLE, limits=SMALL)
    for d in probe_dirs:
        assert (d / "probe.txt").read_text() == "intact"
        assert not (d / f"{token}.txt").exists()
    for d in ("/tmp", "/var/tmp"):
        assert not Path(d, f"{token}.txt").exists()
    _assert_contained(res, token)


@needs_namespaces
def test_private_tmp_is_writable_and_vanishes(token):
    body = (f"import os\nopen('/tmp/{token}', 'w').write('x')\nopen('local.txt', 'w').write('y')\n"
            "print(os.getcwd() == os.environ['HOME'], os.environ['TMPDIR'].startswith(os.getcwd()))\n")
    res = sandbox.run_python(body, limits=SMALL)
    assert res.ok and res.stdout.split() == ["True", "True"]
    assert not Path("/tmp", token).exists()


@needs_namespaces
def test_file_size_limit(token):
    res = sandbox.run_python("open('big', 'wb').write(b'x' * (8 << 20))\n", limits=SMALL)
    assert not res.ok and "File too large" in res.stderr


def test_output_flood_is_cut(mode):
    res = sandbox.run_python("while True:\n    print('x' * 1000)\n", limits=SMALL,
                             max_output=50_000)
    assert res.status == "output_limit" and len(res.stdout) <= 50_000


def test_spool_directory_is_removed(mode, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    res = sandbox.run_python("open('out.txt', 'w').write('x')\nprint(input())", stdin="hi",
                             limits=SMALL)
    assert res.ok and res.stdout == "hi\n"
    assert list(tmp_path.iterdir()) == []


@needs_namespaces
def test_interpreter_in_a_virtualenv_under_tmp(tmp_path):
    """/tmp is replaced by a private tmpfs; an interpreter living there is bound back read-only."""
    import subprocess
    import sys

    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    src = ("import sys\nprint(sys.prefix)\ntry:\n    open(sys.prefix + '/x', 'w')\n"
           "except OSError as e:\n    print(type(e).__name__)\n")
    res = sandbox.run_python(src, python=str(env / "bin" / "python"), limits=SMALL)
    assert res.ok, res.stderr
    assert res.stdout.split() == [str(env), "OSError"]
    assert not (env / "x").exists()


@needs_namespaces
def test_host_files_and_unix_sockets_are_out_of_reach(token, probe_dirs):
    """Only system directories and the interpreter exist in the sandbox's root."""
    with socket.socket(socket.AF_UNIX) as server:
        sock_path = probe_dirs[-1] / "s.sock"
        server.bind(str(sock_path))
        sock_path.chmod(0o777)
        server.listen(1)
        server.setblocking(False)
        paths = [str(d / "probe.txt") for d in probe_dirs] + [__file__]
        body = (
            "import os, socket\nseen = []\n"
            f"for p in {paths!r}:\n"
            "    try:\n        open(p).read()\n        seen.append(p)\n    except OSError:\n"
            "        pass\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"try:\n    s.connect({str(sock_path)!r})\n    seen.append('socket')\n"
            "except OSError:\n    pass\n"
            "print(seen, sorted(os.listdir('/')))\n"
        )
        res = sandbox.run_python(_marked(token, body), limits=SMALL)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert res.ok, res.stderr
    assert res.stdout.startswith("[] "), res.stdout
    sock_path.unlink()


def test_killing_the_grader_kills_the_sandbox(mode, token, tmp_path):
    """If the process that runs the sandbox dies (even by SIGKILL), nothing it started survives."""
    import signal
    import subprocess
    import sys

    src_dir = Path(sandbox.__file__).parents[2]
    host = (f"import sys; sys.path.insert(0, {str(src_dir)!r})\n"
            "from leaf.evaluate import sandbox\n"
            f"sandbox._mode = {mode!r}\n"
            f"sandbox.run_python({_marked(token, 'import time; time.sleep(60)')!r}, timeout=60)\n")
    proc = subprocess.Popen([sys.executable, "-c", host])
    try:
        deadline = time.monotonic() + 20
        while not _leftovers(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _leftovers(token), "the sandboxed program never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while _leftovers(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(token) == []


_UNPRIVILEGED_CHECKS = r'''
import json, os, socket, sys, time
sys.path.insert(0, SRC)
from leaf.evaluate import sandbox
out = {"mode": sandbox.isolation_mode()}
r = sandbox.run_python(
    "import os, sys\nn = 0\ntry:\n    for _ in range(30):\n        if os.fork() == 0:\n"
    "            import time; time.sleep(3); os._exit(0)\n        n += 1\n"
    "except OSError:\n    pass\nprint(n)\nsys.exit(1)\n", max_processes=8, timeout=10)
out["forks"] = r.stdout.strip()
r = sandbox.run_python(
    "import os\nhits = []\nfor p in [SECRET, '/tmp/' + TOKEN]:\n    try:\n"
    "        open(p, 'a').write('x')\n        hits.append(p)\n    except OSError:\n        pass\n"
    "print(hits, sorted(os.listdir('/')))\n".replace("SECRET", repr(SECRET)).replace(
        "TOKEN", repr(TOKEN)))
out["writes"] = r.stdout.strip()
r = sandbox.run_python("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)")
out["net"] = r.stderr.strip().splitlines()[-1]
r = sandbox.run_python("while True:\n    pass\n", timeout=1)
out["loop"] = r.status
print(json.dumps(out))
'''


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists()
                    or not shutil_which("setpriv"), reason="needs root, setpriv, /usr/bin/python3")
def test_unprivileged_user_gets_user_namespace_isolation(probe_dirs, token):
    """Run the sandbox as uid 65534 (nobody) with the system Python: "userns" mode when the
    kernel allows unprivileged user namespaces, with the same guarantees as root mode."""
    import json
    import subprocess

    src_dir = str(Path(sandbox.__file__).parents[2])
    secret = probe_dirs[-1] / "probe.txt"  # world-writable, in a world-writable directory
    script = (f"SRC = {src_dir!r}\nSECRET = {str(secret)!r}\nTOKEN = {token!r}\n"
              + _UNPRIVILEGED_CHECKS)
    run = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
         "-c", script], capture_output=True, text=True, timeout=120, cwd="/")
    if "not running as root" in run.stderr and "userns" not in run.stdout:
        pytest.skip("unprivileged user namespaces are not allowed here")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    if out["mode"] != "userns":
        pytest.skip(f"sandbox fell back to {out['mode']}")
    assert out["forks"] == "7"  # 8 processes including the program itself
    hits, _, listing = out["writes"].partition("] ")
    assert str(secret) not in hits and f"/tmp/{token}" in hits  # its own /tmp only
    assert "'work'" not in listing and "'root'" not in listing
    assert "Network is unreachable" in out["net"]
    assert out["loop"] == "timeout"
    assert secret.read_text() == "intact"
    assert not Path("/tmp", token).exists()


@needs_namespaces
def test_nested_namespaces_cannot_make_the_root_writable(token):
    """A program that makes its own user + mount namespace still cannot write the system dirs."""
    body = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.unshare(0x10000000 | 0x00020000)\n"
        "for name, text in (('setgroups', 'deny'), ('uid_map', f'0 {os.getuid()} 1')):\n"
        "    try:\n        open(f'/proc/self/{name}', 'w').write(text)\n"
        "    except OSError:\n        pass\n"
        "for target in (b'/usr', b'/'):\n"
        "    libc.mount(None, target, None, ctypes.c_ulong(32 | 4096), None)  # remount rw\n"
        f"open('/usr/{token}', 'w').write('x')\n"
    )
    res = sandbox.run_python(_marked(token, body), limits=SMALL)
    assert not res.ok and "Read-only file system" in res.stderr
    assert not Path("/usr", token).exists()
