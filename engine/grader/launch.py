"""Start a learner's kernel under hard limits: ``python -m engine.grader.launch [options] CONNECTION_FILE``.

Before any learner code can run, this process caps its own address space (``RLIMIT_AS``, the
memory cap), the size of any file it writes (``RLIMIT_FSIZE``) and core dumps, and, when started
as root with ``--user``, drops to that unprivileged user (no supplementary groups). Then it
becomes the IPython kernel. The grader kills its whole process group on a deadline, so a cell
that ignores interrupts or sets its own alarms still stops. ``--check`` only tests that the
kernel's imports still work after dropping privileges (the grader asks once, and says so in the
report when they do not).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys


def _limit(which, value):
    soft, hard = resource.getrlimit(which)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (value, value))


def drop_privileges(user: str) -> int:
    """Become ``user`` for good (groups, gid, then uid); returns the new uid. Only root can do this."""
    import pwd

    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit(f"error: could not drop root privileges to {user}")
    return pw.pw_uid


def apply_limits(memory_mb: int, file_mb: int, nproc: int | None = None) -> None:
    _limit(resource.RLIMIT_AS, memory_mb * 2 ** 20)
    _limit(resource.RLIMIT_FSIZE, file_mb * 2 ** 20)
    _limit(resource.RLIMIT_CORE, 0)
    if nproc:
        _limit(resource.RLIMIT_NPROC, nproc)


def _check() -> int:
    """Exit 0 when the kernel's modules and a not-yet-imported stdlib module can still be read."""
    stdlib = os.path.dirname(os.__file__)  # os is loaded already; reading a new module from there is the test
    if not os.access(stdlib, os.R_OK | os.X_OK) or not os.access(sys.executable, os.X_OK):
        print(f"cannot read Python's standard library ({stdlib})")
        return 1
    try:
        import colorsys  # noqa: F401  (not imported at start-up: read from disk now)

        import ipykernel.kernelapp  # noqa: F401
        import numpy  # noqa: F401

        import engine.grader.agent  # noqa: F401
    except Exception as e:
        print(f"cannot import the kernel's modules ({type(e).__name__}: {e})")
        return 1
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.grader.launch")
    ap.add_argument("connection_file", nargs="?")
    ap.add_argument("--memory-mb", type=int, default=4096)
    ap.add_argument("--file-mb", type=int, default=256)
    ap.add_argument("--user", help="unprivileged user to run as (only when started as root)")
    ap.add_argument("--check", action="store_true", help="only test that the kernel could start")
    args = ap.parse_args(argv)
    if args.user:
        if os.geteuid() != 0:
            print("error: --user needs root", file=sys.stderr)
            return 2
        drop_privileges(args.user)
    if args.check:
        return _check()
    apply_limits(args.memory_mb, args.file_mb, nproc=512 if args.user else None)
    from ipykernel import kernelapp

    sys.argv = ["ipykernel_launcher", "-f", args.connection_file, "--HistoryManager.enabled=False"]
    kernelapp.launch_new_instance()
    return 0


if __name__ == "__main__":
    sys.exit(main())
