"""The ``leaf`` command line: one subcommand per stage.

Each module in :mod:`leaf.commands` is a subcommand. It defines ``NAME``, ``HELP`` (one line),
``DESCRIPTION`` (what it reads and writes), ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import torch and transformers inside ``run`` so that ``leaf --help`` is fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import pkgutil
import re
import signal
import sys

from leaf import __version__
from leaf.errors import LeafError


def _command_modules():
    import leaf.commands as pkg

    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"leaf.commands.{n}") for n in names]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every flag's help ends with its default unless it states one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default in (None, False, [], argparse.SUPPRESS)
                or "default" in text or isinstance(action, argparse._VersionAction)):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
        forms = {shown} | ({f"{default:g}"} if isinstance(default, int | float) else set())
        if any(f"({f})" in text for f in forms):  # "prompts per generate call (8)"
            return text
        return f"{text} (default {shown.replace('%', '%%')})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leaf",
        description=(
            "LeaF: distil a teacher LLM into a student while teaching the student to ignore "
            "confounding tokens. Stages talk through JSONL files: screen -> detect -> prune -> "
            "distill -> eval."
        ),
    )
    parser.add_argument("--version", action="version", version=f"leaf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=HelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


#: OSErrors that say the user's files or disk are the problem, not leaf: one line, no traceback
_USER_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG,
                errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG,
                errno.EMFILE}
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _os_problem(exc: BaseException) -> str | None:
    """A one-line description of a file-system failure (read-only folder, full disk ...), or
    None when ``exc`` is not one. Rust-backed writers (safetensors, tokenizers) report the
    errno as ``(os error N)`` in their message."""
    if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or os.strerror(exc.errno)}"
    m = _RUST_OS_ERROR.search(str(exc))
    if m and int(m.group(1)) in _USER_ERRNOS:
        return os.strerror(int(m.group(1))) + f" ({str(exc).strip().splitlines()[0]})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if getattr(args, "verbose", None) is False:  # run, demo: the stages log to stages.log
        from leaf.commands._options import quiet_environment

        quiet_environment()
    if args.command not in ("report", "convert", "grade", "testbed") and \
            not getattr(args, "verbose", False):
        from leaf.models import quiet_transformers  # imports transformers: model commands only

        quiet_transformers()
    rank = os.environ.get("RANK", "").strip()
    if rank not in ("", "0"):  # a data-parallel rank other than 0: rank 0 prints the results
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    try:
        return int(args._run(args) or 0)
    except LeafError as exc:
        print(f"leaf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"leaf {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    except Exception as exc:
        problem = _os_problem(exc)
        if problem is None:
            raise
        print(f"leaf {args.command}: error: {problem}", file=sys.stderr)
        return 2
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Under a launcher, take down the process group before the interpreter exits: left to
    the interpreter's own teardown, its communication threads can abort the process."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def entry() -> None:
    """The ``leaf`` program: :func:`main`, then exit with its code. Once the work is over a
    Ctrl-C has nothing left to stop, so it is ignored while the interpreter shuts down (it
    would otherwise end the process by SIGINT instead of with the code)."""
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        # under a launcher every output is written and the process group is down, but the C++
        # teardown of the communication threads can still abort a rank ("terminate called
        # without an active exception"): leave without running it
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
