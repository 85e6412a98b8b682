"""Run a command under a pseudo-terminal and read back what a person would see on the screen."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(argv: list[str], env: dict[str, str], timeout: float,
                    columns: int = 120) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on one pseudo-terminal (``columns`` wide); return its
    exit status and everything it wrote, as raw text."""
    leader, follower = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**env, "COLUMNS": str(columns), "TERM": "xterm"}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env=env, close_fds=True)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"{argv} ran past {timeout} s")
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(leader)
    return proc.wait(), b"".join(chunks).decode("utf-8", "replace")


def screen_lines(raw: str) -> list[str]:
    """The lines left on the screen by ``raw``: a carriage return starts the line over (what
    follows the last one stays), escape sequences (erase-line, colours) are dropped."""
    out = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        out.append(_ANSI.sub("", line.rsplit("\r", 1)[-1]).rstrip())
    if out and not out[-1]:
        out.pop()
    return out
